"""Retention: finished tasks (with their steps) and deleted VMs' rows are purged once older than
IAAS_RETENTION_DAYS, by the sweep, in bounded batches -- each batch its own short transaction, so a
large backlog is worked off over several sweeps without long locks.

A deleted VM's row goes only once no task refers to it any more (its history is kept as long as its
tasks are); tasks go first for that reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models import Task, Vm
from common.states import TaskStatus, VmStatus

MAX_BATCHES_PER_SWEEP = 10
_FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def _purge_batch(session: Session, model: type[Task] | type[Vm], batch: int, *expired: Any) -> int:
    """Delete at most `batch` rows of `model` matching `expired`, skipping rows another transaction
    holds (they go in a later sweep)."""
    oldest = select(model.id).where(*expired).limit(batch).with_for_update(skip_locked=True)
    return len(session.scalars(delete(model).where(model.id.in_(oldest)).returning(model.id)).all())


def _expired_tasks(cutoff: datetime) -> tuple[Any, ...]:
    return (Task.status.in_(_FINISHED), Task.finished_at < cutoff)


def _expired_vms(cutoff: datetime) -> tuple[Any, ...]:
    return (Vm.status == VmStatus.DELETED, Vm.deleted_at < cutoff, ~exists().where(Task.vm_id == Vm.id))


def purge_expired(factory: sessionmaker[Session], retention_days: float, batch: int) -> dict[str, int]:
    """Purge what is past retention, at most MAX_BATCHES_PER_SWEEP batches of each kind. Returns
    how many tasks and VM rows went (their steps and idempotency keys go with the tasks)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    purged = {"tasks": 0, "vms": 0}
    kinds = (("tasks", Task, _expired_tasks(cutoff)), ("vms", Vm, _expired_vms(cutoff)))
    for kind, model, expired in kinds:
        for _ in range(MAX_BATCHES_PER_SWEEP):
            with transaction(factory) as session:
                count = _purge_batch(session, model, batch, *expired)
            purged[kind] += count
            if count < batch:
                break
    return purged
