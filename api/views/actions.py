"""/v1/actions: operator actions that are not about one VM."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from api.presenters import task_json
from api.runtime import db, runtime
from api.schemas import DnsLabel
from api.views.body import json_object
from common.dispatch import publish_and_mark
from common.models import Task
from common.states import TaskKind, TaskStatus

bp = Blueprint("actions", __name__, url_prefix="/v1/actions")


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    host: DnsLabel | None = None  # default: this API's IAAS_HOST


@bp.post("/reconcile")
def reconcile() -> ResponseReturnValue:
    body = ReconcileRequest.model_validate(json_object(optional=True))
    rt = runtime()
    host = body.host or rt.settings.host
    task = Task(
        id=uuid.uuid4(), kind=TaskKind.RECONCILE, host=host, status=TaskStatus.PENDING, request={"host": host}
    )
    session = db()
    session.add(task)
    session.commit()
    if publish_and_mark(rt.celery, rt.sessions, task):
        session.refresh(task)
    response = jsonify({"task": task_json(task)})
    response.status_code = 202
    response.headers["Location"] = url_for("tasks.get_task", task_id=task.id)
    return response
