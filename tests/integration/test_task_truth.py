"""What the API says is true: a 409 vm_busy names the task the VM is busy with, and a task's times are
in the order things happened, however late the `queued_at` mark (written off the request path,
common/dispatch.QueuedMarks) arrives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from common import lifecycle
from common.db import transaction
from common.lifecycle import VmOp
from common.models import Task
from tests.integration.helpers import vm_body
from tests.support.invariants import assert_task_times_are_causal
from tests.support.polling import poll

pytestmark = pytest.mark.usefixtures("idle_host")  # no worker: the test moves the tasks itself


def created(client: FlaskClient, name: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A pending VM and its create task, once the task's `queued_at` mark is written."""
    response = client.post("/v1/vms", json=vm_body(name))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()

    def marked() -> bool | None:
        return True if client.get(response.headers["Location"]).get_json()["queued_at"] else None

    poll(marked, timeout=10, what="the queued_at mark")
    return uuid.UUID(body["vm"]["id"]), uuid.UUID(body["task"]["id"])


def claim(sessions: Any, task_id: uuid.UUID) -> lifecycle.Claim:
    with transaction(sessions) as session:
        claimed = lifecycle.claim(session, task_id, "tests#1", 30, 300)
    assert claimed is not None
    return claimed


def busy_details(response: Any) -> dict[str, Any]:
    assert response.status_code == 409, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "vm_busy"
    details: dict[str, Any] = error["details"]
    return details


def test_vm_busy_names_the_active_task(client: FlaskClient, sessions: Any) -> None:
    vm_id, create_task = created(client, "busy")
    claimed = claim(sessions, create_task)  # a worker started the create: DELETE may not cancel it
    details = busy_details(client.delete(f"/v1/vms/{vm_id}"))
    assert details == {"task_id": str(create_task), "kind": "create_vm", "status": "running"}
    assert client.get(f"/v1/tasks/{details['task_id']}").status_code == 200

    # The VM reads `running` while its create is still active: a stop passes the status check and
    # loses to the create at PostgreSQL's one-active-task index, and still names the create.
    with transaction(sessions) as session:
        lifecycle.move_vm(session, vm_id, VmOp.BUILD)
        lifecycle.move_vm(session, vm_id, VmOp.BUILT)
    details = busy_details(client.post(f"/v1/vms/{vm_id}/stop"))
    assert details == {"task_id": str(create_task), "kind": "create_vm", "status": "running"}

    with transaction(sessions) as session:
        assert lifecycle.finish(session, claimed, result={"vm_id": str(vm_id)})
    stop = client.post(f"/v1/vms/{vm_id}/stop")
    assert stop.status_code == 202
    details = busy_details(client.post(f"/v1/vms/{vm_id}/reboot"))
    assert details == {"task_id": stop.get_json()["task"]["id"], "kind": "stop_vm", "status": "pending"}


def test_a_late_queued_mark_never_comes_after_the_start(client: FlaskClient, sessions: Any) -> None:
    """The race seen on a stop task: the worker claimed the task before the API's marker thread wrote
    `queued_at`, with a time taken after the claim (or from a clock running ahead)."""
    _vm_id, task_id = created(client, "late-mark")
    with transaction(sessions) as session:  # as if the mark had not been written yet
        assert task_id in lifecycle.forget_stale_queueing(session, older_than_s=-60)
    claimed = claim(sessions, task_id)
    late = datetime.now(UTC) + timedelta(hours=1)
    with transaction(sessions) as session:
        lifecycle.mark_queued(session, task_id, late)
    with transaction(sessions) as session:
        assert lifecycle.finish(session, claimed, result={})
    with sessions() as session:
        task = session.scalars(select(Task).where(Task.id == task_id)).one()
    assert task.queued_at is not None and task.started_at is not None and task.finished_at is not None
    assert task.created_at <= task.queued_at <= task.started_at <= task.finished_at
    assert_task_times_are_causal(sessions)


def test_a_late_queued_mark_never_comes_after_a_cancel(client: FlaskClient, sessions: Any) -> None:
    vm_id, task_id = created(client, "late-cancel")
    with transaction(sessions) as session:
        assert task_id in lifecycle.forget_stale_queueing(session, older_than_s=-60)
    assert client.delete(f"/v1/vms/{vm_id}").status_code == 202  # cancels the unstarted create
    with transaction(sessions) as session:
        lifecycle.mark_queued(session, task_id, datetime.now(UTC) + timedelta(hours=1))
    with sessions() as session:
        task = session.scalars(select(Task).where(Task.id == task_id)).one()
    assert task.status == "failed" and task.started_at is None
    assert task.queued_at is not None and task.finished_at is not None
    assert task.created_at <= task.queued_at <= task.finished_at
    assert_task_times_are_causal(sessions)
