"""The saga journal in PostgreSQL, fenced by the task's attempt number.

Every write first checks, in the same transaction, that this run still owns the task (status running,
same attempt). A run whose lease was taken over stops at its next write instead of racing the new
owner. Writes are retried through a database outage (the worker keeps its bookkeeping)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db import db_retrying, transaction
from common.lifecycle import Claim, owned
from common.models import Task, TaskStep
from common.states import StepStatus
from worker.sagas.engine import LeaseLost, StepRecord, UndoData

T = TypeVar("T")
_FINAL = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.UNDONE, StepStatus.UNDO_FAILED)


class DbJournal:
    def __init__(self, sessions: sessionmaker[Session], claim: Claim, retry_s: float) -> None:
        self.sessions = sessions
        self.claim = claim
        self.task_id = claim.task_id
        self.retry_s = retry_s

    def _lost(self) -> LeaseLost:
        return LeaseLost(f"task {self.task_id} attempt {self.claim.attempt} no longer owns the task")

    def _owned(self, work: Callable[[Session], T]) -> T:
        def unit() -> T:
            with transaction(self.sessions) as session:
                owner = session.scalar(select(Task.id).where(*owned(self.claim)).with_for_update(read=True))
                if owner is None:
                    raise self._lost()
                return work(session)

        return db_retrying(self.retry_s)(unit)

    def load(self) -> dict[int, StepRecord]:
        def work(session: Session) -> dict[int, StepRecord]:
            rows = session.scalars(select(TaskStep).where(TaskStep.task_id == self.task_id)).all()
            return {
                r.seq: StepRecord(r.id, r.seq, r.name, StepStatus(r.status), r.error, dict(r.undo_data or {}))
                for r in rows
            }

        return self._owned(work)

    def started(self, seq: int, name: str, undo_data: UndoData, existing: StepRecord | None) -> int:
        def work(session: Session) -> int:
            if existing is not None:  # a step a dead run left `running`: it runs again
                session.execute(
                    update(TaskStep)
                    .where(TaskStep.id == existing.id)
                    .values(status=StepStatus.RUNNING, started_at=datetime.now(UTC), finished_at=None)
                )
                return existing.id
            row = TaskStep(
                task_id=self.task_id, seq=seq, name=name, status=StepStatus.RUNNING, undo_data=undo_data
            )
            session.add(row)
            session.flush()
            return row.id

        return self._owned(work)

    def mark(self, step_id: int, status: StepStatus, **fields: Any) -> None:
        values: dict[str, Any] = {"status": status, **fields}
        if status in _FINAL:
            values["finished_at"] = datetime.now(UTC)

        # One statement: the fence is a locking sub-select, so a takeover waits for this write (or
        # this write sees the takeover and matches nothing) -- the same order a separate
        # SELECT ... FOR SHARE gives, in one round trip.
        fence = exists(select(Task.id).where(*owned(self.claim)).with_for_update(read=True))

        def unit() -> bool:
            with transaction(self.sessions) as session:
                statement = update(TaskStep).where(TaskStep.id == step_id, fence).values(**values)
                return session.execute(statement.returning(TaskStep.id)).first() is not None

        if not db_retrying(self.retry_s)(unit):
            raise self._lost()
