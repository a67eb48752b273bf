"""The saga journal in PostgreSQL, fenced by the task's attempt number.

Every write first checks, in the same transaction, that this run still owns the task (status running,
same attempt). A run whose lease was taken over stops at its next write instead of racing the new
owner. Writes are retried through a database outage (the worker keeps its bookkeeping)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import exists, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db import db_retrying, transaction
from common.lifecycle import Claim, owned
from common.models import Task, TaskStep
from common.states import StepStatus
from worker.sagas.engine import LeaseLost, StepRecord, UndoData

T = TypeVar("T")
_FINAL = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.UNDONE, StepStatus.UNDO_FAILED)


class DbJournal:
    """Fenced writes, as few as the guarantees allow: a step's `succeeded` mark is written with the
    next write (the next step's `started` row, a compensation mark, or `flush()` when the run ends).
    A crash in between leaves the step `running` in the journal, which is what a crash right after
    the step acted always leaves: the next run does it again (steps are idempotent)."""

    def __init__(self, sessions: sessionmaker[Session], claim: Claim, retry_s: float) -> None:
        self.sessions = sessions
        self.claim = claim
        self.task_id = claim.task_id
        self.retry_s = retry_s
        self._succeeded: int | None = None  # a step whose `succeeded` mark waits for the next write

    def _lost(self) -> LeaseLost:
        return LeaseLost(f"task {self.task_id} attempt {self.claim.attempt} no longer owns the task")

    def _fence(self) -> Any:
        """This run still owns the task. A locking sub-select: a takeover waits for the write that
        holds it (or that write sees the takeover and matches nothing) -- the order a separate
        SELECT ... FOR SHARE gives, without its round trip."""
        return exists(select(Task.id).where(*owned(self.claim)).with_for_update(read=True))

    def _write(self, work: Callable[[Session], T | None]) -> T:
        """`work` in one transaction with the waiting `succeeded` mark; None from `work` means the
        fence matched nothing: the lease is lost."""
        pending, self._succeeded = self._succeeded, None

        def unit() -> T | None:
            with transaction(self.sessions) as session:
                if pending is not None and not self._mark(session, pending, StepStatus.SUCCEEDED, {}):
                    return None
                return work(session)

        result = db_retrying(self.retry_s)(unit)
        if result is None:
            raise self._lost()
        return result

    def _mark(self, session: Session, step_id: int, status: StepStatus, fields: dict[str, Any]) -> bool:
        values: dict[str, Any] = {"status": status, **fields}
        if status in _FINAL:
            values["finished_at"] = datetime.now(UTC)
        statement = update(TaskStep).where(TaskStep.id == step_id, self._fence()).values(**values)
        return session.execute(statement.returning(TaskStep.id)).first() is not None

    def load(self) -> dict[int, StepRecord]:
        """The journal so far, read without a lock (the first write fences); LeaseLost if this run
        does not own the task any more."""

        def read() -> dict[int, StepRecord] | None:
            with self.sessions() as session:
                if session.scalar(select(Task.id).where(*owned(self.claim))) is None:
                    return None
                rows = session.scalars(select(TaskStep).where(TaskStep.task_id == self.task_id)).all()
                return {
                    r.seq: StepRecord(
                        r.id, r.seq, r.name, StepStatus(r.status), r.error, dict(r.undo_data or {})
                    )
                    for r in rows
                }

        history = db_retrying(self.retry_s)(read)
        if history is None:
            raise self._lost()
        return history

    def started(self, seq: int, name: str, undo_data: UndoData, existing: StepRecord | None) -> int:
        def work(session: Session) -> int | None:
            if existing is not None:  # a step a dead run left `running`: it runs again
                restarted = session.execute(
                    update(TaskStep)
                    .where(TaskStep.id == existing.id, self._fence())
                    .values(status=StepStatus.RUNNING, started_at=datetime.now(UTC), finished_at=None)
                    .returning(TaskStep.id)
                ).first()
                return existing.id if restarted is not None else None
            row = literal_row(self.task_id, seq, name, undo_data)
            return session.scalar(
                insert(TaskStep)
                .from_select(list(row.selected_columns.keys()), row.where(self._fence()))
                .returning(TaskStep.id)
            )

        return self._write(work)

    def mark(self, step_id: int, status: StepStatus, **fields: Any) -> None:
        if status == StepStatus.SUCCEEDED and not fields:
            self.flush()  # at most one mark waits
            self._succeeded = step_id
            return
        self._write(lambda session: True if self._mark(session, step_id, status, fields) else None)

    def flush(self) -> None:
        """Write the waiting `succeeded` mark, if any (the run ends, or it is about to report)."""
        if self._succeeded is not None:
            self._write(lambda _session: True)


def literal_row(task_id: Any, seq: int, name: str, undo_data: UndoData) -> Any:
    """A one-row SELECT of a new journal row's values, for INSERT ... SELECT ... WHERE <fence>."""
    return select(
        literal(task_id, TaskStep.task_id.type).label("task_id"),
        literal(seq, TaskStep.seq.type).label("seq"),
        literal(name, TaskStep.name.type).label("name"),
        literal(str(StepStatus.RUNNING), TaskStep.status.type).label("status"),
        literal(undo_data, TaskStep.undo_data.type).label("undo_data"),
    )
