"""Retention: finished tasks (with their steps) and deleted VMs' rows are purged once older than
IAAS_RETENTION_DAYS, by the sweep, in bounded batches -- each batch its own short transaction, so a
large backlog is worked off over several sweeps without long locks.

A deleted VM's row goes only once no task refers to it any more (its history is kept as long as its
tasks are); tasks go first for that reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models import Task, Vm
from common.states import TaskStatus, VmStatus

MAX_BATCHES_PER_SWEEP = 10
_FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def _purge_old_tasks(session: Session, cutoff: datetime, batch: int) -> int:
    oldest = (
        select(Task.id)
        .where(Task.status.in_(_FINISHED), Task.finished_at < cutoff)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return len(session.scalars(delete(Task).where(Task.id.in_(oldest)).returning(Task.id)).all())


def _purge_deleted_vms(session: Session, cutoff: datetime, batch: int) -> int:
    oldest = (
        select(Vm.id)
        .where(Vm.status == VmStatus.DELETED, Vm.deleted_at < cutoff, ~exists().where(Task.vm_id == Vm.id))
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return len(session.scalars(delete(Vm).where(Vm.id.in_(oldest)).returning(Vm.id)).all())


def purge_expired(factory: sessionmaker[Session], retention_days: float, batch: int) -> dict[str, int]:
    """Purge what is past retention, at most MAX_BATCHES_PER_SWEEP batches of each kind. Returns
    how many tasks and VM rows went (their steps and idempotency keys go with the tasks)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    purged = {"tasks": 0, "vms": 0}
    for kind, purge in (("tasks", _purge_old_tasks), ("vms", _purge_deleted_vms)):
        for _ in range(MAX_BATCHES_PER_SWEEP):
            with transaction(factory) as session:
                count = purge(session, cutoff, batch)
            purged[kind] += count
            if count < batch:
                break
    return purged
