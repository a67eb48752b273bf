"""Turning a validated request into rows: a VM and the task that will act on it.

These functions add and flush; the view that called them owns the commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.schemas import VmCreate
from common import lifecycle
from common.errors import DiskTooSmall, InvalidState, NameTaken, NotFound, UnknownImage, VmBusy
from common.lifecycle import VmOp
from common.models import Image, Task, Vm
from common.states import ACTIVE_TASK_STATUSES, TaskKind, VmStatus

GIB = 1024**3
_NAME_INDEX = "vms_live_name_unique"
_ACTIVE_TASK_INDEX = "tasks_one_active_per_vm"


def get_live_vm(session: Session, vm_id: uuid.UUID) -> Vm:
    vm = session.get(Vm, vm_id)
    if vm is None or vm.status == VmStatus.DELETED:
        raise NotFound(f"No VM with id {vm_id}.", vm_id=str(vm_id))
    return vm


def request_create(session: Session, body: VmCreate) -> tuple[Vm, Task]:
    image = session.scalar(select(Image).where(Image.name == body.image))
    if image is None:
        raise UnknownImage(f"No image named {body.image!r}; GET /v1/images lists them.", image=body.image)
    if body.disk_gib * GIB < image.virtual_size_bytes:
        needed = -(-image.virtual_size_bytes // GIB)
        raise DiskTooSmall(
            f"Image {image.name!r} needs a disk of at least {needed} GiB.", minimum_disk_gib=needed
        )
    # The VM's disk is an overlay on the image, so it lives where the image lives.
    vm = lifecycle.new_vm(host=image.host, **body.model_dump())
    task = _new_task(TaskKind.CREATE_VM, vm, body.model_dump())
    session.add(vm)
    _flush_or_conflict(session, body.name)  # the VM row first: the task points at it
    session.add(task)
    _flush_or_conflict(session, body.name)
    return vm, task


def request_destroy(session: Session, vm_id: uuid.UUID) -> tuple[Vm, Task]:
    vm = get_live_vm(session, vm_id)
    if vm.status == VmStatus.PENDING:
        return _cancel_unstarted_create(session, vm)
    if not lifecycle.try_move_vm(session, vm_id, VmOp.REQUEST_DELETE):
        _raise_busy_or_invalid(session, vm)
    task = _new_task(TaskKind.DESTROY_VM, vm, {})
    session.add(task)
    _flush_or_conflict(session, vm.name)
    session.refresh(vm)
    return vm, task


def _cancel_unstarted_create(session: Session, vm: Vm) -> tuple[Vm, Task]:
    """DELETE of a VM whose create no worker has started yet (its host has no worker, or the queue is
    long): nothing exists on the hypervisor, so the create is cancelled and the delete is done at once.
    The cancel is a compare-and-set against the worker's claim (both need `pending`, and a claim
    counts an attempt): whichever commits first wins, and a started create answers 409 `vm_busy`."""
    task = lifecycle.new_finished_task(TaskKind.DESTROY_VM, vm.host, vm.id, {"vm_id": str(vm.id)})
    cancelled = lifecycle.cancel_unstarted(
        session,
        vm.id,
        TaskKind.CREATE_VM,
        {
            "code": "cancelled",
            "message": f"Cancelled by DELETE /v1/vms/{vm.id} before a worker started it; "
            "nothing was created on the hypervisor.",
            "details": {"destroy_task_id": str(task.id)},
        },
    )
    gone = lifecycle.try_move_vm(session, vm.id, VmOp.CANCEL_CREATE, deleted_at=func.now())
    if cancelled is None or not gone:  # the request's transaction is rolled back with the error
        _raise_busy_or_invalid(session, vm)
    task.result = {"vm_id": str(vm.id), "cancelled_task_id": str(cancelled)}
    session.add(task)
    session.flush()
    session.refresh(vm)
    session.refresh(task)
    return vm, task


# The status a VM must have for each power action to make sense.
POWER_ACTION_FROM = {
    TaskKind.START_VM: (VmStatus.STOPPED,),
    TaskKind.STOP_VM: (VmStatus.RUNNING,),
    TaskKind.REBOOT_VM: (VmStatus.RUNNING,),
}


def request_power(
    session: Session, vm_id: uuid.UUID, kind: TaskKind, options: dict[str, Any]
) -> tuple[Vm, Task]:
    vm = get_live_vm(session, vm_id)
    if vm.status not in POWER_ACTION_FROM[kind]:
        _raise_busy_or_invalid(session, vm)
    task = _new_task(kind, vm, options)
    session.add(task)
    _flush_or_conflict(session, vm.name)  # one active task per VM: PostgreSQL's index says so
    return vm, task


def _new_task(kind: TaskKind, vm: Vm, request: dict[str, Any]) -> Task:
    return lifecycle.new_task(kind, vm.host, request, vm_id=vm.id)


def _raise_busy_or_invalid(session: Session, vm: Vm) -> None:
    active = session.scalar(select(Task.id).where(Task.vm_id == vm.id, Task.status.in_(ACTIVE_TASK_STATUSES)))
    if active is not None:
        raise VmBusy(f"VM {vm.name!r} has a task in progress; wait for it to finish.", task_id=str(active))
    raise InvalidState(f"VM {vm.name!r} is {vm.status}; that action is not possible now.", status=vm.status)


def _flush_or_conflict(session: Session, name: str) -> None:
    """Let PostgreSQL's unique indexes decide races; translate their verdicts into 409s."""
    try:
        session.flush()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        if constraint == _NAME_INDEX:
            raise NameTaken(f"A VM named {name!r} already exists.", name=name) from exc
        if constraint == _ACTIVE_TASK_INDEX:
            raise VmBusy(f"VM {name!r} has a task in progress; wait for it to finish.") from exc
        raise
