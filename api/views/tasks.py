"""/v1/tasks: what clients poll -- or wait on -- and the project's task history. Steps show the saga's
progress as it happens."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from api.auth import caller, require_admin
from api.runtime import db, runtime
from api.schemas import TaskListQuery, TaskQuery
from api.task_reads import HistoryFilter, read_task, task_history
from common.errors import NotFound

bp = Blueprint("tasks", __name__, url_prefix="/v1/tasks")


@bp.get("")
def list_tasks() -> ResponseReturnValue:
    """The caller's project's tasks, newest first; with `all_projects=true` (admins only) every
    project's, the scheduled reconciliations included."""
    query = TaskListQuery.model_validate(request.args.to_dict())
    if query.all_projects:
        require_admin("Listing every project's tasks")
    project_id = None if query.all_projects else caller().project_id
    which = HistoryFilter(project_id, vm_id=query.vm_id, kind=query.kind, status=query.status)
    items, next_cursor = task_history(db(), which, query.limit, query.cursor)
    return jsonify({"items": items, "next_cursor": next_cursor})


@bp.get("/<uuid:task_id>")
def get_task(task_id: uuid.UUID) -> ResponseReturnValue:
    """The task; with `wait`, once it differs from the version the client has seen (`seen`, or
    If-None-Match with the ETag of an earlier answer), or when the wait is over -- 200 either way.
    A plain GET whose If-None-Match names the current version is 304."""
    query = TaskQuery.model_validate(request.args.to_dict())
    who = caller()
    project_id = None if who.is_admin else who.project_id
    # `*` names no version: it is no state the client has seen.
    tagged = request.if_none_match.as_set(include_weak=True)
    seen = {query.seen} if query.seen else tagged

    def read() -> dict[str, Any] | None:
        return read_task(runtime().autocommit, task_id, project_id)

    if query.wait is None or not seen:
        task = read()
    else:
        task = _wait_for_change(task_id, project_id, read, seen, query.wait)
    if task is None:
        raise NotFound(f"No task with id {task_id}.", task_id=str(task_id))
    response = Response(status=304) if query.wait is None and task["version"] in tagged else jsonify(task)
    response.headers["ETag"] = f'"{task["version"]}"'
    return response


def _wait_for_change(
    task_id: uuid.UUID,
    project_id: uuid.UUID | None,
    read: Callable[[], dict[str, Any] | None],
    seen: set[str],
    wait_s: float,
) -> dict[str, Any] | None:
    """Read the task until its version is none of `seen`, waking on its notifications
    (api/task_events.py) and reading once more when the time is up. No database connection is held
    while waiting; the waiters one notification wakes share one read."""
    deadline = time.monotonic() + wait_s
    events = runtime().task_events
    with events.watch(task_id) as wake:  # before the first read: no change is lost
        task = read()
        while task is not None and task["version"] in seen and not events.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if wake.event.wait(remaining):
                wake.event.clear()
                task = events.reads.read((task_id, project_id), wake.at, read)
            else:
                task = read()  # the time is up: what is answered is read now
    return task
