"""/v1/vms: ask for VMs, list and read them, delete them. Every change answers 202 with its task."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import defer

from api import MAX_BODY_BYTES
from api.accept import Recorded, accept
from api.auth import caller, require_admin
from api.console import console_tail
from api.pagination import decode_cursor, encode_cursor
from api.presenters import sha256_hex, vm_json
from api.runtime import db
from api.schemas import (
    MAX_USER_DATA_BYTES,
    ConsoleQuery,
    PowerAction,
    TaskHistoryQuery,
    VmCreate,
    VmListQuery,
)
from api.task_reads import HistoryFilter, task_history
from api.views.body import json_object
from api.vm_requests import (
    get_live_vm,
    get_vm_of_history,
    project_name,
    request_create,
    request_destroy,
    request_power,
)
from common.ipam import Address, addresses_of
from common.models import Project, Task, Vm
from common.states import TaskKind, VmStatus

bp = Blueprint("vms", __name__, url_prefix="/v1/vms")

# What api/presenters.sha256_hex says of a VM's user-data, computed where the user-data is.
USER_DATA_SHA256 = func.encode(func.sha256(func.convert_to(Vm.user_data, "UTF8")), "hex")
# The VM's newest task, read with the VM (index tasks_by_vm, backwards): no query per VM in a list.
LATEST_TASK_ID = (
    select(Task.id)
    .where(Task.vm_id == Vm.id)
    .order_by(Task.created_at.desc(), Task.id.desc())
    .limit(1)
    .scalar_subquery()
    .label("latest_task_id")
)

TEXT_UTF8 = "text/plain; charset=utf-8"
# The console log's whole size in bytes (0, with an empty body, when it has no log yet), and where in
# it the answered text starts: a client that follows the log asks again once the size has grown.
LOG_SIZE_HEADER = "X-Console-Log-Size"
OFFSET_HEADER = "X-Console-Offset"


# A create's body may carry up to 64 KiB of user-data, which JSON may spell up to 6 times longer
# (a control character is \u0001), besides the rest of the request: every user-data within its limit
# fits, however it is escaped. Every other body stays within the app's MAX_CONTENT_LENGTH.
CREATE_BODY_BYTES = 6 * MAX_USER_DATA_BYTES + MAX_BODY_BYTES


def _accept(
    work: Callable[[], tuple[Vm, Task, list[Address]]], body: dict[str, Any] | None
) -> ResponseReturnValue:
    def record() -> Recorded:
        vm, task, addresses = work()
        return {"vm": _shown(vm, addresses, task.id)}, task  # the new task is the VM's newest

    return accept(record, body)


def _with_addresses(vm_and_task: tuple[Vm, Task]) -> tuple[Vm, Task, list[Address]]:
    vm, task = vm_and_task
    return vm, task, addresses_of(db(), [vm.id])[vm.id]


def _shown(vm: Vm, addresses: list[Address], latest_task_id: uuid.UUID | None) -> dict[str, Any]:
    """One VM read whole (its user-data included, to digest it), as the API shows it."""
    digest = sha256_hex(vm.user_data)
    return vm_json(vm, project_name(db(), vm, caller()), addresses, digest, latest_task_id)


@bp.post("")
def create_vm() -> ResponseReturnValue:
    request.max_content_length = CREATE_BODY_BYTES
    sent = json_object()
    body = VmCreate.model_validate(sent)
    # The fingerprint is of the body as sent: a flavor's name and its sizes are different requests.
    return _accept(lambda: request_create(db(), body, caller()), sent)


@bp.get("")
def list_vms() -> ResponseReturnValue:
    """The caller's project's VMs; with `all_projects=true` (admins only) every project's."""
    query = VmListQuery.model_validate(request.args.to_dict())
    # The user-data is digested by PostgreSQL, not read: a page of VMs could carry 64 KiB each.
    stmt = (
        select(Vm, Project.name, USER_DATA_SHA256, LATEST_TASK_ID)
        .join(Project, Project.id == Vm.project_id)
        .where(Vm.status != VmStatus.DELETED)
        .options(defer(Vm.user_data), defer(Vm.public_key))
    )
    if query.all_projects:
        require_admin("Listing every project's VMs")
    else:
        stmt = stmt.where(Vm.project_id == caller().project_id)
    if query.status is not None:
        stmt = stmt.where(Vm.status == query.status)
    if query.name is not None:
        stmt = stmt.where(Vm.name == query.name)
    if query.cursor is not None:
        stmt = stmt.where(tuple_(Vm.created_at, Vm.id) > tuple_(*decode_cursor(query.cursor)))
    rows: Sequence[Any] = db().execute(stmt.order_by(Vm.created_at, Vm.id).limit(query.limit + 1)).all()
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = encode_cursor(page[-1].Vm.created_at, page[-1].Vm.id) if more else None
    addresses = addresses_of(db(), [row.Vm.id for row in page]) if page else {}
    items = [
        vm_json(vm, project, addresses.get(vm.id, []), digest, latest) for vm, project, digest, latest in page
    ]
    return jsonify({"items": items, "next_cursor": next_cursor})


@bp.get("/<uuid:vm_id>")
def get_vm(vm_id: uuid.UUID) -> ResponseReturnValue:
    vm = get_live_vm(db(), vm_id, caller())
    latest = db().scalar(select(LATEST_TASK_ID).where(Vm.id == vm.id))
    return jsonify(_shown(vm, addresses_of(db(), [vm.id])[vm.id], latest))


@bp.get("/<uuid:vm_id>/tasks")
def list_vm_tasks(vm_id: uuid.UUID) -> ResponseReturnValue:
    """The VM's tasks, newest first -- also once the VM is deleted, for as long as its tasks are
    kept (its row stays as long as they do: common/retention.py)."""
    query = TaskHistoryQuery.model_validate(request.args.to_dict())
    vm = get_vm_of_history(db(), vm_id, caller())
    which = HistoryFilter(None, vm_id=vm.id, kind=query.kind, status=query.status)
    items, next_cursor = task_history(db(), which, query.limit, query.cursor)
    return jsonify({"items": items, "next_cursor": next_cursor})


@bp.get("/<uuid:vm_id>/console")
def get_vm_console(vm_id: uuid.UUID) -> ResponseReturnValue:
    """The end of the VM's serial console log, as text; bytes that are not UTF-8 become U+FFFD."""
    query = ConsoleQuery.model_validate(request.args.to_dict())
    tail = console_tail(db(), get_live_vm(db(), vm_id, caller()), query.tail_bytes)
    response = Response(tail.data.decode("utf-8", errors="replace"), content_type=TEXT_UTF8)
    response.headers[LOG_SIZE_HEADER] = str(tail.size)
    response.headers[OFFSET_HEADER] = str(tail.offset)
    return response


@bp.delete("/<uuid:vm_id>")
def delete_vm(vm_id: uuid.UUID) -> ResponseReturnValue:
    return _accept(lambda: _with_addresses(request_destroy(db(), vm_id, caller())), None)


def _power(vm_id: uuid.UUID, kind: TaskKind) -> ResponseReturnValue:
    options = PowerAction.model_validate(json_object(optional=True)).model_dump()
    work = lambda: _with_addresses(request_power(db(), vm_id, kind, options, caller()))  # noqa: E731
    return _accept(work, {"kind": kind, **options})


@bp.post("/<uuid:vm_id>/start")
def start_vm(vm_id: uuid.UUID) -> ResponseReturnValue:
    return _power(vm_id, TaskKind.START_VM)


@bp.post("/<uuid:vm_id>/stop")
def stop_vm(vm_id: uuid.UUID) -> ResponseReturnValue:
    """Graceful shutdown, forced after IAAS_STOP_TIMEOUT_S; {"force": true} forces at once."""
    return _power(vm_id, TaskKind.STOP_VM)


@bp.post("/<uuid:vm_id>/reboot")
def reboot_vm(vm_id: uuid.UUID) -> ResponseReturnValue:
    return _power(vm_id, TaskKind.REBOOT_VM)
