"""Turning a validated request into rows: a VM and the task that will act on it.

These functions add and flush; the view that called them owns the commit."""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.presenters import sha256_hex
from api.schemas import MAX_USER_DATA_BYTES, VmCreate
from common import ipam, lifecycle, projects
from common.errors import (
    Conflict,
    DiskTooSmall,
    InvalidState,
    NameTaken,
    NotFound,
    QuotaExceeded,
    UnknownFlavor,
    UnknownImage,
    UnknownKeypair,
    UserDataTooLarge,
    VmBusy,
)
from common.ipam import Address
from common.lifecycle import VmOp
from common.models import Flavor, Image, Keypair, Project, Task, Vm
from common.states import ACTIVE_TASK_STATUSES, TaskKind, VmStatus
from common.tokens import Caller

GIB = 1024**3
_NAME_INDEX = "vms_live_name_unique"
_ACTIVE_TASK_INDEX = "tasks_one_active_per_vm"


def get_live_vm(session: Session, vm_id: uuid.UUID, caller: Caller) -> Vm:
    """The VM, if it is live and the caller may see it: another project's VM is not found, exactly
    as if it did not exist (an admin sees every project's)."""
    return _visible_vm(session, vm_id, caller, live=True)


def get_vm_of_history(session: Session, vm_id: uuid.UUID, caller: Caller) -> Vm:
    """The VM, live or deleted (its task history outlives it), if the caller may see it, as above."""
    return _visible_vm(session, vm_id, caller, live=False)


def _visible_vm(session: Session, vm_id: uuid.UUID, caller: Caller, *, live: bool) -> Vm:
    vm = session.get(Vm, vm_id)
    if (
        vm is None
        or (live and vm.status == VmStatus.DELETED)
        or not (caller.is_admin or vm.project_id == caller.project_id)
    ):
        raise NotFound(f"No VM with id {vm_id}.", vm_id=str(vm_id))
    return vm


def project_name(session: Session, vm: Vm, caller: Caller) -> str:
    """The name of the VM's project (known without a read when it is the caller's own)."""
    if vm.project_id == caller.project_id:
        return caller.project
    return session.scalar(select(Project.name).where(Project.id == vm.project_id)) or ""


def request_create(session: Session, body: VmCreate, caller: Caller) -> tuple[Vm, Task, list[Address]]:
    """The VM and its create task in one statement (the hot path of the API): the VM's host is the
    image's host (its disk is an overlay on the image), read in the same statement, and the VM must
    fit in the project's quota, whose usage the same statement checks and takes. When it inserts
    nothing, a second read says why: no such image, too small a disk, or the quota. A flavor and a
    keypair are read first, in the same transaction, and the VM keeps copies (its task the sizes);
    the addresses are allocated after the VM row, in the same transaction too (common/ipam.py), so a
    full network undoes the whole create. None of these reads happens unless the request asks."""
    sizes = body.sizes() if body.flavor is None else _flavor_sizes(session, body.flavor)
    digest = _user_data_sha256(body.user_data)
    public_key = None if body.key_name is None else _public_key(session, body.key_name, caller)
    vm = lifecycle.new_vm(
        host="", project_id=caller.project_id, name=body.name, image=body.image,
        user_data=body.user_data, key_name=body.key_name, public_key=public_key, **sizes,
    )  # fmt: skip
    # The task keeps what was asked but the user-data itself: the VM row holds it, the task its digest.
    request = {**body.model_dump(exclude_none=True, exclude={"user_data"}), **sizes}
    if digest is not None:
        request["user_data_sha256"] = digest
    task = _new_task(TaskKind.CREATE_VM, vm, request, caller)
    for _attempt in range(3):
        try:
            host = lifecycle.insert_vm_and_task(session, vm, task, disk_bytes=vm.disk_gib * GIB)
        except IntegrityError as exc:
            _raise_conflict(exc, body.name)
        if host is not None:
            vm.host = task.host = host
            addresses = ipam.allocate(session, vm.id, caller.project_id, body.nics()) if body.networks else []
            return vm, task, addresses
        _raise_unusable_image(session, body.image, vm.disk_gib)
        _raise_quota_exceeded(session, projects.Amounts(1, vm.vcpus, vm.memory_mib, vm.disk_gib), caller)
        # Neither: a delete in the project freed room between the two statements; try again.
    raise Conflict("The project's usage kept changing while this VM was being recorded; retry the request.")


def _flavor_sizes(session: Session, name: str) -> dict[str, int]:
    flavor = session.get(Flavor, name)
    if flavor is None:
        raise UnknownFlavor(f"No flavor named {name!r}; GET /v1/flavors lists them.", flavor=name)
    return {"vcpus": flavor.vcpus, "memory_mib": flavor.memory_mib, "disk_gib": flavor.disk_gib}


def _public_key(session: Session, name: str, caller: Caller) -> str:
    key = session.scalar(
        select(Keypair.public_key).where(Keypair.project_id == caller.project_id, Keypair.name == name)
    )
    if key is None:
        raise UnknownKeypair(
            f"No keypair named {name!r} in your project; GET /v1/keypairs lists them.", key_name=name
        )
    return key


def _user_data_sha256(user_data: str | None) -> str | None:
    """The digest of the user-data, once its size is known to be within the limit."""
    if user_data is None:
        return None
    data = user_data.encode()
    if len(data) > MAX_USER_DATA_BYTES:
        raise UserDataTooLarge(
            f"user_data is {len(data)} bytes as UTF-8; at most {MAX_USER_DATA_BYTES} are taken.",
            max_bytes=MAX_USER_DATA_BYTES,
            bytes=len(data),
        )
    return sha256_hex(user_data)


def _raise_unusable_image(session: Session, name: str, disk_gib: int) -> None:
    image = session.execute(select(Image.name, Image.virtual_size_bytes).where(Image.name == name)).first()
    if image is None:
        raise UnknownImage(f"No image named {name!r}; GET /v1/images lists them.", image=name)
    needed = -(-image.virtual_size_bytes // GIB)
    if disk_gib < needed:
        raise DiskTooSmall(
            f"Image {image.name!r} needs a disk of at least {needed} GiB.", minimum_disk_gib=needed
        )


def _raise_quota_exceeded(session: Session, requested: projects.Amounts, caller: Caller) -> None:
    project = session.get(Project, caller.project_id, populate_existing=True)
    assert project is not None  # a token's project is never deleted
    details = projects.first_exceeded(projects.limits_of(project), projects.usage_of(project), requested)
    if details is not None:
        raise QuotaExceeded(
            f"Project {caller.project!r} may use at most {details['limit']} {details['resource']}; it uses "
            f"{details['in_use']} and this VM asks for {details['requested']}. Delete VMs you no longer "
            "need, or ask an admin to raise the limit (iaas-admin project set-limits).",
            **details,
        )


def request_destroy(session: Session, vm_id: uuid.UUID, caller: Caller) -> tuple[Vm, Task]:
    vm = get_live_vm(session, vm_id, caller)
    if vm.status == VmStatus.PENDING:
        return _cancel_unstarted_create(session, vm, caller)
    if not lifecycle.try_move_vm(session, vm_id, VmOp.REQUEST_DELETE):
        _raise_busy_or_invalid(session, vm)
    task = _new_task(TaskKind.DESTROY_VM, vm, {}, caller)
    session.add(task)
    _flush_or_conflict(session, vm)
    session.refresh(vm)
    return vm, task


def _cancel_unstarted_create(session: Session, vm: Vm, caller: Caller) -> tuple[Vm, Task]:
    """DELETE of a VM whose create no worker has started yet (its host has no worker, or the queue is
    long): nothing exists on the hypervisor, so the create is cancelled and the delete is done at once.
    The cancel is a compare-and-set against the worker's claim (both need `pending`, and a claim
    counts an attempt): whichever commits first wins, and a started create answers 409 `vm_busy`."""
    task = lifecycle.new_finished_task(
        TaskKind.DESTROY_VM, vm.host, vm.id, {"vm_id": str(vm.id)},
        project_id=vm.project_id, requested_by=caller.audit(),
    )  # fmt: skip
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
    session: Session, vm_id: uuid.UUID, kind: TaskKind, options: dict[str, Any], caller: Caller
) -> tuple[Vm, Task]:
    vm = get_live_vm(session, vm_id, caller)
    if vm.status not in POWER_ACTION_FROM[kind]:
        _raise_busy_or_invalid(session, vm)
    task = _new_task(kind, vm, options, caller)
    session.add(task)
    _flush_or_conflict(session, vm)  # one active task per VM: PostgreSQL's index says so
    return vm, task


def _new_task(kind: TaskKind, vm: Vm, request: dict[str, Any], caller: Caller) -> Task:
    """A task on the VM, in the VM's project (an admin acting on another project's VM included)."""
    return lifecycle.new_task(
        kind, vm.host, request, vm_id=vm.id, project_id=vm.project_id, requested_by=caller.audit()
    )


def _raise_busy_or_invalid(session: Session, vm: Vm) -> None:
    _raise_if_busy(session, vm.id, vm.name)
    raise InvalidState(f"VM {vm.name!r} is {vm.status}; that action is not possible now.", status=vm.status)


def _raise_if_busy(session: Session, vm_id: uuid.UUID, name: str) -> None:
    """409 vm_busy naming the VM's active task (its id, kind and status: what to wait for), if any."""
    active = session.execute(
        select(Task.id, Task.kind, Task.status).where(
            Task.vm_id == vm_id, Task.status.in_(ACTIVE_TASK_STATUSES)
        )
    ).first()
    if active is not None:
        raise VmBusy(
            f"VM {name!r} has a task in progress ({active.kind}, {active.status}); wait for it to finish: "
            f"GET /v1/tasks/{active.id}.",
            task_id=str(active.id),
            kind=active.kind,
            status=active.status,
        )


def _flush_or_conflict(session: Session, vm: Vm) -> None:
    """Let PostgreSQL's unique indexes decide races; translate their verdicts into 409s."""
    vm_id, name = vm.id, vm.name
    try:
        session.flush()
    except IntegrityError as exc:
        if _constraint(exc) == _ACTIVE_TASK_INDEX:
            # Another request's task won the race (and is committed: the index waited for it). The
            # failed transaction can read nothing more; a new one reads which task it is.
            session.rollback()
            _raise_if_busy(session, vm_id, name)
            raise VmBusy(f"VM {name!r} had a task in progress; try again.") from exc
        _raise_conflict(exc, name)


def _constraint(exc: IntegrityError) -> str | None:
    return getattr(getattr(exc.orig, "diag", None), "constraint_name", None)


def _raise_conflict(exc: IntegrityError, name: str) -> NoReturn:
    if _constraint(exc) == _NAME_INDEX:
        raise NameTaken(f"A VM named {name!r} already exists.", name=name) from exc
    raise exc
