"""The task and VM state machines: which status changes exist (tables, below) and the named operations
that make them. Nothing else in mini-iaas writes `tasks.status` or `vms.status`.

Every operation is one compare-and-set UPDATE whose expected states come from its row of the table,
so a transition the table does not list cannot be issued, and two actors racing for one row cannot
both win (the loser's UPDATE matches nothing). The functions take a Session and never commit: the
request or task boundary that called them owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    bindparam,
    column,
    exists,
    func,
    or_,
    select,
    text,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import case

from common.errors import StateChanged
from common.models import Task, Vm
from common.states import (
    ACTIVE_TASK_STATUSES,
    DELETABLE_VM_STATUSES,
    PowerState,
    TaskKind,
    TaskStatus,
    VmStatus,
)

NEW = None  # the "from" state of a row being inserted


class InvalidTransition(Exception):
    """A status change the table does not allow: a bug in the caller, never a client's doing."""


# --- tasks ---------------------------------------------------------------------------------------


class TaskOp(StrEnum):
    RECORD = "record"  # a request becomes a task
    RECORD_DONE = "record_done"  # a task finished at birth (a delete that cancelled an unstarted create)
    CLAIM = "claim"  # a worker starts a run, with a lease
    RENEW_LEASE = "renew_lease"
    SUCCEED = "succeed"
    FAIL = "fail"
    REQUEUE = "requeue"  # the run's lease ran out: its worker is gone
    TAKE_OVER = "take_over"  # a restarted worker frees the runs of its dead earlier incarnation
    CANCEL = "cancel"  # no worker has started it yet
    FAIL_STUCK = "fail_stuck"  # past its deadline: back to pending, to compensate and fail


TASK_TRANSITIONS: Mapping[TaskOp, tuple[tuple[TaskStatus | None, ...], TaskStatus]] = {
    TaskOp.RECORD: ((NEW,), TaskStatus.PENDING),
    TaskOp.RECORD_DONE: ((NEW,), TaskStatus.SUCCEEDED),
    TaskOp.CLAIM: ((TaskStatus.PENDING,), TaskStatus.RUNNING),
    TaskOp.RENEW_LEASE: ((TaskStatus.RUNNING,), TaskStatus.RUNNING),
    TaskOp.SUCCEED: ((TaskStatus.RUNNING,), TaskStatus.SUCCEEDED),
    TaskOp.FAIL: ((TaskStatus.RUNNING,), TaskStatus.FAILED),
    TaskOp.REQUEUE: ((TaskStatus.RUNNING,), TaskStatus.PENDING),
    TaskOp.TAKE_OVER: ((TaskStatus.RUNNING,), TaskStatus.PENDING),
    TaskOp.CANCEL: ((TaskStatus.PENDING,), TaskStatus.FAILED),
    TaskOp.FAIL_STUCK: ((TaskStatus.PENDING, TaskStatus.RUNNING), TaskStatus.PENDING),
}


# --- VMs -----------------------------------------------------------------------------------------


class VmOp(StrEnum):
    RECORD = "record"
    BUILD = "build"  # the create saga claims it (again, when resumed)
    BUILT = "built"
    BUILD_FAILED = "build_failed"  # the create's checkpoint undo: never left `building`
    STARTED = "started"  # a start or reboot finished
    STOPPED = "stopped"  # a stop finished
    REQUEST_DELETE = "request_delete"
    CLAIM_DELETE = "claim_delete"
    DELETE_FAILED = "delete_failed"  # so DELETE can be retried
    DELETED = "deleted"
    CANCEL_CREATE = "cancel_create"  # deleted before any worker touched it
    POWERED_ON = "powered_on"  # the hypervisor says so (events, reconcile)
    POWERED_OFF = "powered_off"
    MISSING_DOMAIN = "missing_domain"  # reconcile: the database has it, libvirt does not


_UP_OR_DOWN = (VmStatus.RUNNING, VmStatus.STOPPED)
VM_TRANSITIONS: Mapping[VmOp, tuple[tuple[VmStatus | None, ...], VmStatus]] = {
    VmOp.RECORD: ((NEW,), VmStatus.PENDING),
    VmOp.BUILD: ((VmStatus.PENDING, VmStatus.BUILDING), VmStatus.BUILDING),
    # RUNNING too: a run that died right after this step finds its own effect.
    VmOp.BUILT: ((VmStatus.BUILDING, VmStatus.RUNNING), VmStatus.RUNNING),
    # RUNNING too: a failure after mark_running acted (but before the task finished) still compensates.
    VmOp.BUILD_FAILED: (
        (VmStatus.PENDING, VmStatus.BUILDING, VmStatus.RUNNING, VmStatus.ERROR),
        VmStatus.ERROR,
    ),
    VmOp.STARTED: (_UP_OR_DOWN, VmStatus.RUNNING),
    VmOp.STOPPED: (_UP_OR_DOWN, VmStatus.STOPPED),
    VmOp.REQUEST_DELETE: (DELETABLE_VM_STATUSES, VmStatus.DELETING),
    VmOp.CLAIM_DELETE: ((VmStatus.DELETING,), VmStatus.DELETING),
    VmOp.DELETE_FAILED: ((VmStatus.DELETING, VmStatus.ERROR), VmStatus.ERROR),
    VmOp.DELETED: ((VmStatus.DELETING,), VmStatus.DELETED),
    VmOp.CANCEL_CREATE: ((VmStatus.PENDING,), VmStatus.DELETED),
    VmOp.POWERED_ON: (_UP_OR_DOWN, VmStatus.RUNNING),
    VmOp.POWERED_OFF: (_UP_OR_DOWN, VmStatus.STOPPED),
    VmOp.MISSING_DOMAIN: (_UP_OR_DOWN, VmStatus.ERROR),
}

ALLOWED_TASK_TRANSITIONS = frozenset((old, new) for olds, new in TASK_TRANSITIONS.values() for old in olds)
ALLOWED_VM_TRANSITIONS = frozenset((old, new) for olds, new in VM_TRANSITIONS.values() for old in olds)


def check_task_transition(old: TaskStatus | None, new: TaskStatus) -> None:
    if (old, new) not in ALLOWED_TASK_TRANSITIONS:
        raise InvalidTransition(f"a task cannot go from {old or '(new)'} to {new}")


def check_vm_transition(old: VmStatus | None, new: VmStatus) -> None:
    if (old, new) not in ALLOWED_VM_TRANSITIONS:
        raise InvalidTransition(f"a VM cannot go from {old or '(new)'} to {new}")


def _task_cas(op: TaskOp, *where: ColumnElement[bool], **new_values: Any) -> Any:
    """UPDATE tasks SET status = <op's target> WHERE status IN <op's sources> AND <where>."""
    olds, new = TASK_TRANSITIONS[op]
    expected = [old for old in olds if old is not NEW]
    return update(Task).where(Task.status.in_(expected), *where).values(status=new, **new_values)


def _vm_cas(op: VmOp, *where: ColumnElement[bool], **new_values: Any) -> Any:
    olds, new = VM_TRANSITIONS[op]
    expected = [old for old in olds if old is not NEW]
    return update(Vm).where(Vm.status.in_(expected), *where).values(status=new, **new_values)


# The operations after which a VM no longer uses its project's quota: it is gone, or its failed
# create was compensated (the row stays, in `error`, to show what happened).
RELEASING_OPS = frozenset({VmOp.DELETED, VmOp.CANCEL_CREATE, VmOp.BUILD_FAILED})

# The VM's NICs go in the same statement (common/ipam.py): its addresses return to the pool exactly
# when its quota does, once.
_RELEASE_QUOTA = text(
    """
    WITH released AS (
        UPDATE vms SET holds_quota = false WHERE id = :vm_id AND holds_quota
        RETURNING id, project_id, vcpus, memory_mib, disk_gib
    ), freed AS (
        DELETE FROM nics USING released WHERE nics.vm_id = released.id
    )
    UPDATE projects
    SET used_instances = used_instances - 1, used_vcpus = used_vcpus - released.vcpus,
        used_memory_mib = used_memory_mib - released.memory_mib,
        used_disk_gib = used_disk_gib - released.disk_gib
    FROM released WHERE projects.id = released.project_id
    """
).bindparams(bindparam("vm_id", type_=Vm.__table__.c.id.type))


def _after_move(session: Session, vm_id: uuid.UUID, op: VmOp) -> None:
    """What a move implies besides the status: releasing the VM's quota and its addresses, once (the
    flag it clears makes a repeated or resumed release do nothing)."""
    if op in RELEASING_OPS:
        session.execute(_RELEASE_QUOTA, {"vm_id": vm_id})


# --- recording -----------------------------------------------------------------------------------


def new_task(
    kind: TaskKind,
    host: str,
    request: dict[str, Any],
    *,
    vm_id: uuid.UUID | None = None,
    task_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
    requested_by: dict[str, Any] | None = None,
) -> Task:
    """A task row, born pending and not yet queued (the outbox: common/dispatch.py sends it)."""
    check_task_transition(NEW, TaskStatus.PENDING)
    return Task(
        id=task_id or uuid.uuid4(),
        kind=kind,
        vm_id=vm_id,
        project_id=project_id,
        requested_by=requested_by,
        host=host,
        status=TaskStatus.PENDING,
        request=request,
        attempts=0,
        created_at=datetime.now(UTC),  # known here, so the answer needs no read-back after the INSERT
        steps=[],  # a new task has no journal yet: showing it needs no query
    )


def new_finished_task(
    kind: TaskKind,
    host: str,
    vm_id: uuid.UUID,
    result: dict[str, Any],
    *,
    project_id: uuid.UUID | None = None,
    requested_by: dict[str, Any] | None = None,
) -> Task:
    check_task_transition(NEW, TaskStatus.SUCCEEDED)
    now = datetime.now(UTC)
    return Task(
        id=uuid.uuid4(), kind=kind, vm_id=vm_id, project_id=project_id, requested_by=requested_by,
        host=host, status=TaskStatus.SUCCEEDED,
        request={}, result=result, created_at=now, started_at=now, finished_at=now, steps=[],
    )  # fmt: skip


def new_vm(**fields: Any) -> Vm:
    check_vm_transition(NEW, VmStatus.PENDING)
    now = datetime.now(UTC)
    return Vm(
        id=uuid.uuid4(), status=VmStatus.PENDING, power_state=PowerState.UNKNOWN,
        created_at=now, updated_at=now, **fields,
    )  # fmt: skip


# The hot path of POST /v1/vms as one prepared text: the VM and its create task, placed on the image's
# host (a VM's disk is an overlay on its image), inserted only if the image exists and fits the disk.
# A text statement because building the same SQL from expression objects on every request costs more
# than the database round trip it saves.
_INSERT_VM_AND_TASK = text(
    """
    WITH quota AS (
        UPDATE projects
        SET used_instances = used_instances + 1, used_vcpus = used_vcpus + :vcpus,
            used_memory_mib = used_memory_mib + :memory_mib, used_disk_gib = used_disk_gib + :disk_gib
        WHERE id = :project_id
          AND used_instances + 1 <= max_instances AND used_vcpus + :vcpus <= max_vcpus
          AND used_memory_mib + :memory_mib <= max_memory_mib AND used_disk_gib + :disk_gib <= max_disk_gib
        RETURNING id
    ), image AS (
        SELECT host FROM images WHERE name = :image AND virtual_size_bytes <= :disk_bytes
    ), vm AS (
        INSERT INTO vms (id, project_id, name, image, vcpus, memory_mib, disk_gib, status, power_state,
                         host, holds_quota, created_at, updated_at, user_data, key_name, public_key)
        SELECT :vm_id, quota.id, :name, :image, :vcpus, :memory_mib, :disk_gib, :vm_status,
               :power_state, host, true, :vm_created_at, :vm_created_at, :user_data, :key_name, :public_key
        FROM image, quota
        RETURNING id, host
    )
    INSERT INTO tasks (id, kind, vm_id, project_id, requested_by, host, status, request, attempts,
                       created_at)
    SELECT :task_id, :kind, vm.id, :project_id, :requested_by, vm.host, :task_status, :request, 0,
           :task_created_at
    FROM vm
    RETURNING host
    """
).bindparams(
    bindparam("vm_id", type_=Vm.__table__.c.id.type),
    bindparam("project_id", type_=Vm.__table__.c.project_id.type),
    bindparam("task_id", type_=Task.__table__.c.id.type),
    bindparam("request", type_=Task.__table__.c.request.type),
    bindparam("requested_by", type_=Task.__table__.c.requested_by.type),
)


def insert_vm_and_task(session: Session, vm: Vm, task: Task, *, disk_bytes: int) -> str | None:
    """INSERT a new VM (new_vm) and its first task (new_task) in one statement, both on the host of
    the VM's image, if that image exists and fits in `disk_bytes`, and if the VM fits in its
    project's quota -- whose usage the same statement takes (see common/projects.py). Returns the
    host, or None when nothing was inserted; the caller then raises, so that the transaction (and
    any usage taken) is rolled back. Every other value is known already: nothing is read back."""
    check_vm_transition(NEW, VmStatus(vm.status))
    check_task_transition(NEW, TaskStatus(task.status))
    params = {
        "vm_id": vm.id, "project_id": vm.project_id, "name": vm.name, "image": vm.image, "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib, "disk_gib": vm.disk_gib, "vm_status": str(vm.status),
        "power_state": str(vm.power_state), "vm_created_at": vm.created_at, "disk_bytes": disk_bytes,
        "task_id": task.id, "kind": str(task.kind), "task_status": str(task.status), "request": task.request,
        "requested_by": task.requested_by, "task_created_at": task.created_at,
        "user_data": vm.user_data, "key_name": vm.key_name, "public_key": vm.public_key,
    }  # fmt: skip
    return session.execute(_INSERT_VM_AND_TASK, params).scalar()


# Built once: it runs after every accepted request. The mark comes after the publish, and a worker
# may have started (or a DELETE cancelled) the task meanwhile: so that the times stay causal,
# created_at <= queued_at <= started_at <= finished_at, it is never later than either, nor earlier
# than the task's recording (LEAST and GREATEST skip NULLs). Whatever clock `at` was read from.
_MARK_QUEUED = (
    update(Task)
    .where(Task.id == bindparam("task_id", type_=Task.__table__.c.id.type), Task.queued_at.is_(None))
    .values(
        queued_at=func.greatest(
            Task.created_at,
            func.least(
                bindparam("at", type_=Task.__table__.c.queued_at.type), Task.started_at, Task.finished_at
            ),
        )
    )
)


def mark_queued(connection: Session | Connection, task_id: uuid.UUID, at: datetime) -> None:
    """The broker took the message: the outbox need not send it (`at` is when it was handed over:
    read before publishing, as a worker may start it at once)."""
    connection.execute(_MARK_QUEUED, {"task_id": task_id, "at": at})


def mark_many_queued(connection: Connection, marks: Mapping[uuid.UUID, datetime]) -> None:
    """mark_queued for many tasks in one round trip (the driver batches the parameter sets). A Core
    connection: given a list of parameters, an ORM session would run a bulk update by primary key."""
    connection.execute(_MARK_QUEUED, [{"task_id": task_id, "at": at} for task_id, at in marks.items()])


def unqueued_tasks(session: Session, grace_s: float, only: Collection[uuid.UUID] | None = None) -> list[Task]:
    """Pending tasks committed but never queued, oldest first (the outbox)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    query = select(Task).where(
        Task.status == TaskStatus.PENDING,
        Task.queued_at.is_(None),
        # recovered tasks are old but were queued before: the grace is for fresh ones only
        (Task.created_at < cutoff) | (Task.attempts > 0),
    )
    if only is not None:
        query = query.where(Task.id.in_(list(only)))
    return list(session.scalars(query.order_by(Task.created_at)).all())


def forget_stale_queueing(session: Session, older_than_s: float) -> list[uuid.UUID]:
    """Pending tasks queued long ago but never started (a message lost with a Redis restart): mark them
    unqueued, so the outbox sends them again."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    return list(
        session.scalars(
            update(Task)
            .where(Task.status == TaskStatus.PENDING, Task.queued_at < cutoff)
            .values(queued_at=None)
            .returning(Task.id)
        ).all()
    )


# --- a run of a task -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    task_id: uuid.UUID
    attempt: int
    vm_id: uuid.UUID | None
    deadline: datetime


def owned(claim: Claim) -> tuple[ColumnElement[bool], ...]:
    """The fence: this run still owns the task (running, and nobody started a later attempt)."""
    return (Task.id == claim.task_id, Task.attempts == claim.attempt, Task.status == TaskStatus.RUNNING)


def claim(
    session: Session, task_id: uuid.UUID, owner: str, lease_s: float, deadline_s: float
) -> Claim | None:
    """pending -> running: a duplicated message, or a second worker, finds it taken (None)."""
    now = datetime.now(UTC)  # read per call: a retry after a database outage starts a fresh lease
    row: Any = session.execute(
        _task_cas(
            TaskOp.CLAIM,
            Task.id == task_id,
            attempts=Task.attempts + 1,
            # never before it was recorded or queued, even if the API's clock runs ahead of ours
            started_at=func.coalesce(
                Task.started_at, func.greatest(func.now(), Task.created_at, Task.queued_at)
            ),
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            deadline_at=func.coalesce(Task.deadline_at, Task.created_at + timedelta(seconds=deadline_s)),
        ).returning(Task.id, Task.attempts, Task.vm_id, Task.deadline_at)
    ).first()
    if row is None:
        return None
    task, attempt, vm_id, deadline = row
    return Claim(task, attempt, vm_id, deadline or now + timedelta(seconds=deadline_s))


def renew_lease(session: Session, claim: Claim, lease_s: float) -> bool:
    renewed = session.execute(
        _task_cas(
            TaskOp.RENEW_LEASE, *owned(claim), lease_expires_at=datetime.now(UTC) + timedelta(seconds=lease_s)
        ).returning(Task.id)
    ).first()
    return renewed is not None


def finish(
    session: Session,
    claim: Claim,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """running -> succeeded (with `result`) or failed (with `error`), fenced by the attempt."""
    op = TaskOp.FAIL if error is not None else TaskOp.SUCCEED
    done = session.execute(
        _task_cas(
            op, *owned(claim), finished_at=func.greatest(func.now(), Task.started_at),
            lease_owner=None, lease_expires_at=None,
            result=result, error=error,
        ).returning(Task.id)
    ).first()  # fmt: skip
    return done is not None


def _released(**extra: Any) -> dict[str, Any]:
    """What a run's end without an outcome resets: the next run is queued afresh by the outbox."""
    return {"lease_owner": None, "lease_expires_at": None, "queued_at": None, **extra}


def requeue_expired(session: Session) -> list[uuid.UUID]:
    """Running tasks whose lease ran out lost their worker: back to pending, to be sent again."""
    return list(
        session.scalars(
            _task_cas(TaskOp.REQUEUE, Task.lease_expires_at < datetime.now(UTC), **_released()).returning(
                Task.id
            )
        ).all()
    )


def take_over(session: Session, node: str, incarnation: str) -> list[uuid.UUID]:
    """Free the running tasks of an earlier incarnation of worker `node`: it is provably gone, since
    only one process runs under a node name and this one just started under it."""
    mine = owner_name(node, incarnation)
    return list(
        session.scalars(
            _task_cas(
                TaskOp.TAKE_OVER,
                Task.lease_owner.startswith(f"{node}#", autoescape=True),
                Task.lease_owner != mine,
                **_released(),
            ).returning(Task.id)
        ).all()
    )


def owner_name(node: str, incarnation: str) -> str:
    """A run's lease owner: the worker's node name and its process incarnation."""
    return f"{node}#{incarnation}"


def cancel_unstarted(session: Session, vm_id: uuid.UUID, kind: TaskKind, error: dict[str, Any]) -> Any:
    """pending -> failed for a task no worker has claimed (a claim counts an attempt, so the two
    exclude each other). Returns its id, or None when a worker got there first."""
    return session.scalar(
        _task_cas(
            TaskOp.CANCEL,
            Task.vm_id == vm_id,
            Task.kind == kind,
            Task.attempts == 0,
            finished_at=func.greatest(func.now(), Task.created_at, Task.queued_at),
            error=error,
        ).returning(Task.id)
    )


def fail_stuck(session: Session, task_ids: Iterable[uuid.UUID]) -> set[str]:
    """Back to pending with the deadline passed: the sweep re-sends it, and its next run only
    compensates what the journal says was done, then fails it."""
    ids = list(task_ids)
    if not ids:
        return set()
    now = func.now()
    deadline = func.least(func.coalesce(Task.deadline_at, now), now)
    rows = session.scalars(
        _task_cas(TaskOp.FAIL_STUCK, Task.id.in_(ids), **_released(deadline_at=deadline)).returning(Task.id)
    ).all()
    return {str(task_id) for task_id in rows}


# --- VMs -----------------------------------------------------------------------------------------


def move_vm(
    session: Session,
    vm_id: uuid.UUID,
    op: VmOp,
    *,
    settled: tuple[VmStatus, ...] = (),
    **new_values: Any,
) -> bool:
    """Compare-and-set a VM's status by the op's row of the table. Raises StateChanged when another
    actor moved it first -- unless it is already in one of the `settled` states, where there is
    nothing left to do (returns False then)."""
    moved = session.execute(_vm_cas(op, Vm.id == vm_id, **new_values).returning(Vm.id)).first()
    if moved is not None:
        _after_move(session, vm_id, op)
        return True
    current = session.scalar(select(Vm.status).where(Vm.id == vm_id))
    if settled and current in settled:
        return False
    olds, new = VM_TRANSITIONS[op]
    raise StateChanged(
        f"VM {vm_id} is {current}, not one of {[str(s) for s in olds]}; not moving it to {new}"
    )


def try_move_vm(session: Session, vm_id: uuid.UUID, op: VmOp, **new_values: Any) -> bool:
    """move_vm that reports a lost race instead of raising (the API turns it into 409)."""
    moved = session.execute(_vm_cas(op, Vm.id == vm_id, **new_values).returning(Vm.id)).first() is not None
    if moved:
        _after_move(session, vm_id, op)
    return moved


def has_active_task() -> ColumnElement[bool]:
    return exists().where(Task.vm_id == Vm.id, Task.status.in_(ACTIVE_TASK_STATUSES))


def mark_missing(session: Session, vm_ids: Iterable[uuid.UUID]) -> set[str]:
    """Reconcile found no domain for these VMs: `error`, unless a task owns them meanwhile."""
    ids = list(vm_ids)
    if not ids:
        return set()
    rows = session.scalars(
        _vm_cas(VmOp.MISSING_DOMAIN, Vm.id.in_(ids), ~has_active_task(), power_state=PowerState.UNKNOWN)
        .returning(Vm.id)
    ).all()  # fmt: skip
    return {str(vm_id) for vm_id in rows}


def status_for_power(power_state: PowerState) -> VmStatus | None:
    """The status a running/stopped VM takes for a power state; None keeps its status (a paused VM
    is still up, and `unknown` is no evidence either way)."""
    if power_state == PowerState.RUNNING:
        return VM_TRANSITIONS[VmOp.POWERED_ON][1]
    if power_state in (PowerState.SHUTOFF, PowerState.CRASHED):
        return VM_TRANSITIONS[VmOp.POWERED_OFF][1]
    return None


# The only statuses that merely say whether a VM is up, so they follow its power. The others belong to a
# task (pending, building, deleting) or wait for an operator (error), and are never changed here.
POWER_FOLLOWING_STATUSES = VM_TRANSITIONS[VmOp.POWERED_ON][0]
assert VM_TRANSITIONS[VmOp.POWERED_OFF][0] == POWER_FOLLOWING_STATUSES


def sync_power_states(session: Session, power_states: Mapping[uuid.UUID, PowerState]) -> list[uuid.UUID]:
    """Record each VM's power state, and move `running`<->`stopped` with it (POWERED_ON/OFF), in one
    statement. A VM with an active task is left alone: it belongs to its task (so the stop/start pair
    of our own reboot never flips it), as are deleted VMs and ids that are no VM. Rows that already
    say so are not rewritten. Returns the ids of the VMs that changed."""
    if not power_states:
        return []
    reported = values(
        column("vm_id", UUID(as_uuid=True)),
        column("power_state", String),
        column("status", String),
        name="reported",
    ).data(
        [(vm_id, str(power), _str_or_none(status_for_power(power))) for vm_id, power in power_states.items()]
    )
    new_status = case(
        (Vm.status.in_(POWER_FOLLOWING_STATUSES), func.coalesce(reported.c.status, Vm.status)),
        else_=Vm.status,
    )
    statement = (
        update(Vm)
        .where(
            Vm.id == reported.c.vm_id,
            Vm.status != VmStatus.DELETED,
            ~has_active_task(),
            or_(Vm.power_state != reported.c.power_state, Vm.status != new_status),
        )
        .values(power_state=reported.c.power_state, status=new_status, updated_at=func.now())
        .returning(Vm.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(statement))


def _str_or_none(status: VmStatus | None) -> str | None:
    return None if status is None else str(status)
