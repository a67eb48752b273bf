"""The one path by which a request becomes a task: record it, commit, then enqueue (never the other
way round), and answer 202 with the task -- or, for a retry carrying the same `Idempotency-Key`, the
first answer again.

One commit per request; marking the task queued after publishing is a hint, written off the request
path (common/dispatch.QueuedMarks)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import jsonify, request, url_for
from flask.typing import ResponseReturnValue

from api.auth import caller
from api.idempotency import claim_key, fingerprint, record_answer, update_answer, validate_key
from api.presenters import task_json
from api.runtime import db, runtime
from common.dispatch import enqueue
from common.models import Task
from common.states import TaskStatus

# What a request records: the answer's body (without the task) and the task.
Recorded = tuple[dict[str, Any], Task]


def answer(status: int, body: dict[str, Any], task_id: uuid.UUID | None) -> ResponseReturnValue:
    response = jsonify(body)
    response.status_code = status
    if task_id is not None:
        response.headers["Location"] = url_for("tasks.get_task", task_id=task_id)
    return response


def accept(record: Callable[[], Recorded], body: dict[str, Any] | None) -> ResponseReturnValue:
    """Run `record` in the request's transaction, commit, enqueue, answer 202 with the task."""
    session = db()
    project_id = caller().project_id
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        replay = claim_key(
            session, project_id, validate_key(key), request.method, request.path, fingerprint(body)
        )
        if replay is not None:
            session.rollback()
            return answer(replay.status, replay.body, replay.task_id)
    shown, task = record()
    reply = {**shown, "task": task_json(task)}
    if key is not None:
        record_answer(session, project_id, key, 202, reply, task.id)
    session.commit()
    # A delete that cancelled a create no worker had started is finished already: nothing to queue.
    if task.status == TaskStatus.PENDING:
        queued_at = enqueue(runtime().celery, runtime().queued_marks, task)
        if queued_at is not None:
            reply["task"] = task_json(task, queued_at)
            if key is not None:  # a replay shows what this first answer shows (a hint, like queued_at)
                update_answer(runtime().autocommit, project_id, key, reply)
    return answer(202, reply, task.id)
