"""/v1/actions: operator actions that are not about one VM."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from api.accept import Recorded, accept
from api.runtime import db, runtime
from api.schemas import DnsLabel
from api.views.body import json_object
from common import lifecycle
from common.states import TaskKind

bp = Blueprint("actions", __name__, url_prefix="/v1/actions")


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    host: DnsLabel | None = None  # default: this API's IAAS_HOST


@bp.post("/reconcile")
def reconcile() -> ResponseReturnValue:
    """Reconcile a host now; like every request that makes a task, it takes an Idempotency-Key."""
    body = ReconcileRequest.model_validate(json_object(optional=True))
    host = body.host or runtime().settings.host

    def record() -> Recorded:
        task = lifecycle.new_task(TaskKind.RECONCILE, host, {"host": host})
        db().add(task)
        db().flush()
        return {}, task

    return accept(record, body.model_dump())
