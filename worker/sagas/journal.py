"""The saga journal in PostgreSQL, fenced by the task's attempt number.

Every write first checks, in the same transaction, that this run still owns the task (status running,
same attempt). A run whose lease was taken over stops at its next write instead of racing the new
owner. Writes are retried through a database outage (the worker keeps its bookkeeping)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session, sessionmaker

from common.db import db_retrying, transaction
from common.lifecycle import Claim, owned
from common.models import Task, TaskStep
from common.states import StepStatus, TaskStatus
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

    def _params(self, **values: Any) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "attempt": self.claim.attempt,
            "task_running": TaskStatus.RUNNING,
            **values,
        }

    def _write(self, work: Callable[[Session], T | None]) -> T:
        """`work` in one transaction with the waiting `succeeded` mark; None from `work` means the
        fence matched nothing: the lease is lost."""
        pending, self._succeeded = self._succeeded, None

        def unit() -> T | None:
            with transaction(self.sessions) as session:
                if pending is not None and not self._mark(session, pending, StepStatus.SUCCEEDED, {}):
                    return None
                return work(session)

        try:
            result = db_retrying(self.retry_s)(unit)
        except BaseException:
            self._succeeded = pending  # not written: it waits for the next write, as before
            raise
        if result is None:
            raise self._lost()
        return result

    def _mark(self, session: Session, step_id: int, status: StepStatus, fields: dict[str, Any]) -> bool:
        values: dict[str, Any] = {"status": status, **fields}
        if status in _FINAL:
            values["finished_at"] = datetime.now(UTC)
        statement = _mark_statement(tuple(sorted(values)))
        return session.execute(statement, self._params(step_id=step_id, **values)).first() is not None

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
                params = self._params(step_id=existing.id, running=StepStatus.RUNNING, now=datetime.now(UTC))
                restarted = session.execute(_RESTART, params).first()
                return existing.id if restarted is not None else None
            params = self._params(seq=seq, name=name, running=StepStatus.RUNNING, undo_data=undo_data)
            return session.execute(_INSERT, params).scalar()

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


# Every journal write is one statement fenced by FENCE, a locking sub-select: a takeover waits for the
# write that holds it (or that write sees the takeover and matches nothing) -- the order a separate
# SELECT ... FOR SHARE gives, without its round trip. Prepared texts, because building these from
# expression objects on every write cost several times the round trip.
FENCE = """EXISTS (SELECT 1 FROM tasks WHERE id = :task_id AND attempts = :attempt AND status = :task_running
                   FOR SHARE)"""
_TYPES = (
    bindparam("task_id", type_=TaskStep.__table__.c.task_id.type),
    bindparam("undo_data", type_=TaskStep.__table__.c.undo_data.type),
)
_INSERT_SQL = "INSERT INTO task_steps (task_id, seq, name, status, undo_data) SELECT :task_id, :seq, :name, :running, :undo_data WHERE "  # noqa: E501
_RESTART_SQL = (
    "UPDATE task_steps SET status = :running, started_at = :now, finished_at = NULL WHERE id = :step_id AND "
)
_INSERT = text(_INSERT_SQL + FENCE + " RETURNING id").bindparams(*_TYPES)
_RESTART = text(_RESTART_SQL + FENCE + " RETURNING id").bindparams(_TYPES[0])
_MARKABLE = frozenset({"status", "finished_at", "error", "undo_error"})


@lru_cache(maxsize=16)
def _mark_statement(columns: tuple[str, ...]) -> Any:
    """UPDATE of a step's `columns` (our own column names, never input), fenced."""
    assert _MARKABLE.issuperset(columns), columns
    assignments = ", ".join(f"{column} = :{column}" for column in columns)
    statement = f"UPDATE task_steps SET {assignments} WHERE id = :step_id AND {FENCE} RETURNING id"  # noqa: S608
    return text(statement).bindparams(_TYPES[0])
