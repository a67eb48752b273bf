"""Reading tasks with their steps in one statement: what clients poll, so it must be cheap.

One SELECT on the autocommit engine: no BEGIN, no ROLLBACK, no ORM; the steps come aggregated as JSON
in the same row (ordered by their place in the saga). A page of a history (newest first) is one
statement too, each task's steps aggregated the same way."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, func, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.pagination import decode_cursor, encode_cursor
from api.presenters import with_version
from common.db import is_disconnect
from common.models import Task, TaskStep

_STEP_FIELDS = ("name", "status", "error", "undo_error", "started_at", "finished_at")
_STEP_TIMES = ("started_at", "finished_at")

_steps = (
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_object(
                        *(part for name in _STEP_FIELDS for part in (name, getattr(TaskStep, name)))
                    ),
                    TaskStep.seq,
                )
            ),
            literal_column("'[]'::json"),
        )
    )
    .where(TaskStep.task_id == Task.id)
    .scalar_subquery()
)

_SHOWN = select(
    Task.id, Task.kind, Task.status, Task.vm_id, Task.host, Task.attempts, Task.requested_by, Task.result,
    Task.error, Task.created_at, Task.queued_at, Task.started_at, Task.finished_at, _steps.label("steps"),
)  # fmt: skip
# Built once, with the ids as parameters: building the statement per GET cost more than running it.
_ANY_TASK = _SHOWN.where(Task.id == bindparam("task_id", type_=Task.__table__.c.id.type))
_PROJECT_TASK = _ANY_TASK.where(Task.project_id == bindparam("project_id", type_=Task.__table__.c.id.type))


def read_task(engine: Engine, task_id: uuid.UUID, project_id: uuid.UUID | None) -> dict[str, Any] | None:
    """The task as GET /v1/tasks/<id> shows it (api.presenters.task_json's shape), or None -- also
    when it belongs to another project than `project_id` (None: any project, for admins)."""
    try:
        row = _fetch(engine, task_id, project_id)
    except DBAPIError as exc:
        # No pre-ping on this engine: a connection that died with a PostgreSQL restart fails once,
        # which drops the pool's stale connections; a read is safe to try again at once.
        if not is_disconnect(exc):
            raise
        row = _fetch(engine, task_id, project_id)
    return None if row is None else _shown(row)


@dataclass(frozen=True)
class HistoryFilter:
    """Which tasks a history shows: of one project (None: every project's), of one VM, kind, status."""

    project_id: uuid.UUID | None
    vm_id: uuid.UUID | None = None
    kind: str | None = None
    status: str | None = None


def task_history(
    session: Session, which: HistoryFilter, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of tasks, newest first, as GET /v1/tasks/<id> shows each, and the cursor of the next
    page (None on the last). Keyset paging over (created_at, id), backwards (api/pagination.py)."""
    stmt = _SHOWN
    for column, value in (
        (Task.project_id, which.project_id), (Task.vm_id, which.vm_id),
        (Task.kind, which.kind), (Task.status, which.status),
    ):  # fmt: skip
        if value is not None:
            stmt = stmt.where(column == value)
    if cursor is not None:
        stmt = stmt.where(tuple_(Task.created_at, Task.id) < tuple_(*decode_cursor(cursor)))
    order = (Task.created_at.desc(), Task.id.desc())
    rows: Sequence[Any] = session.execute(stmt.order_by(*order).limit(limit + 1)).mappings().all()
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return [_shown(row) for row in page], next_cursor


def _shown(row: Any) -> dict[str, Any]:
    steps = [{**step, **{k: _iso_text(step[k]) for k in _STEP_TIMES}} for step in row["steps"]]
    return with_version(
        {
            "id": str(row["id"]),
            "kind": row["kind"],
            "status": row["status"],
            "vm_id": str(row["vm_id"]) if row["vm_id"] else None,
            "host": row["host"],
            "attempts": row["attempts"],
            "requested_by": row["requested_by"],
            "steps": steps,
            "result": row["result"],
            "error": row["error"],
            **{k: _iso(row[k]) for k in ("created_at", "queued_at", "started_at", "finished_at")},
        }
    )


def _fetch(engine: Engine, task_id: uuid.UUID, project_id: uuid.UUID | None) -> Any:
    with engine.connect() as connection:
        if project_id is None:
            return connection.execute(_ANY_TASK, {"task_id": task_id}).mappings().first()
        params = {"task_id": task_id, "project_id": project_id}
        return connection.execute(_PROJECT_TASK, params).mappings().first()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _iso_text(value: str | None) -> str | None:
    """PostgreSQL's JSON timestamps trim trailing zeros of the fraction; show them as Python does."""
    return datetime.fromisoformat(value).isoformat() if value is not None else None
