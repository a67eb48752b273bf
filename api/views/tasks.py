"""/v1/tasks/<id>: what clients poll. Steps show the saga's progress as it happens."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.auth import caller
from api.runtime import runtime
from api.task_reads import read_task
from common.errors import NotFound

bp = Blueprint("tasks", __name__, url_prefix="/v1/tasks")


@bp.get("/<uuid:task_id>")
def get_task(task_id: uuid.UUID) -> ResponseReturnValue:
    who = caller()
    task = read_task(runtime().autocommit, task_id, None if who.is_admin else who.project_id)
    if task is None:
        raise NotFound(f"No task with id {task_id}.", task_id=str(task_id))
    return jsonify(task)
