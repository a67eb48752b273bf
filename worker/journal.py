"""The saga journal in PostgreSQL, fenced by the task's attempt number.

Every write first checks, in the same transaction, that this run still owns the task (status running,
same attempt). A run whose lease was taken over stops at its next write instead of racing the new
owner. Writes are retried through a database outage (the worker keeps its bookkeeping)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db import db_retrying, transaction
from common.models import Task, TaskStep
from common.states import StepStatus, TaskStatus
from worker.saga import LeaseLost, StepRecord

T = TypeVar("T")
_FINAL = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.UNDONE, StepStatus.UNDO_FAILED)


class DbJournal:
    def __init__(
        self, sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, retry_s: float
    ) -> None:
        self.sessions = sessions
        self.task_id = task_id
        self.attempt = attempt
        self.retry_s = retry_s

    def _owned(self, work: Callable[[Session], T]) -> T:
        def unit() -> T:
            with transaction(self.sessions) as session:
                owner = session.scalar(
                    select(Task.id)
                    .where(
                        Task.id == self.task_id,
                        Task.attempts == self.attempt,
                        Task.status == TaskStatus.RUNNING,
                    )
                    .with_for_update(read=True)
                )
                if owner is None:
                    raise LeaseLost(f"task {self.task_id} attempt {self.attempt} no longer owns the task")
                return work(session)

        return db_retrying(self.retry_s)(unit)

    def load(self) -> dict[int, StepRecord]:
        def work(session: Session) -> dict[int, StepRecord]:
            rows = session.scalars(select(TaskStep).where(TaskStep.task_id == self.task_id)).all()
            return {r.seq: StepRecord(r.id, r.seq, r.name, StepStatus(r.status), r.error) for r in rows}

        return self._owned(work)

    def started(self, seq: int, name: str, undo_data: dict[str, Any], existing: StepRecord | None) -> int:
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

        def work(session: Session) -> None:
            session.execute(update(TaskStep).where(TaskStep.id == step_id).values(**values))

        self._owned(work)
