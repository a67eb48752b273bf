"""/v1/actions: operator actions that are not about one VM."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from api.accept import Recorded, accept
from api.auth import require_admin
from api.runtime import db, runtime
from api.schemas import DnsLabel
from api.views.body import json_object
from common import hosts, lifecycle
from common.errors import UnknownHost
from common.states import TaskKind

bp = Blueprint("actions", __name__, url_prefix="/v1/actions")


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    host: DnsLabel | None = None  # default: this API's IAAS_HOST


@bp.post("/reconcile")
def reconcile() -> ResponseReturnValue:
    """Reconcile a host now (admins only); like every request that makes a task, it takes an
    Idempotency-Key. The host must be one whose worker has started: never a queue no worker reads."""
    admin = require_admin("Reconciliation")
    body = ReconcileRequest.model_validate(json_object(optional=True))
    host = body.host or runtime().settings.host

    def record() -> Recorded:
        if not hosts.is_known(db(), host):
            known = hosts.known(db())
            raise UnknownHost(
                f"No worker has ever started on host {host!r}; known hosts: {', '.join(known) or 'none'}. "
                "Start the worker there (make up) or pick a known host.",
                host=host, known_hosts=known,
            )  # fmt: skip
        task = lifecycle.new_task(
            TaskKind.RECONCILE, host, {"host": host}, project_id=admin.project_id, requested_by=admin.audit()
        )
        db().add(task)
        db().flush()
        return {}, task

    return accept(record, body.model_dump())
