"""GET /v1/tasks/<id>?wait=: the answer comes when the task changes (PostgreSQL's NOTIFY wakes the
API's one listener, api/task_events.py), at once when the client's version is stale, or when the wait
is over -- also when the listener lost its connection while the task changed. Tasks here are on a
host no worker serves; the test makes their changes itself, through common/lifecycle.py."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from common import lifecycle
from common.db import transaction
from tests.integration.helpers import vm_body
from tests.support.environment import WAIT_LATENCIES
from tests.support.polling import poll
from tests.support.tokens import api_client

pytestmark = pytest.mark.usefixtures("idle_host")

ROUNDS = 10


def pending_task(client: FlaskClient, name: str = "waits") -> dict[str, Any]:
    response = client.post("/v1/vms", json=vm_body(name))
    assert response.status_code == 202, response.get_json()
    return poll(lambda: _queued(client, response.get_json()["task"]["id"]), timeout=10, what="queued_at")


def _queued(client: FlaskClient, task_id: str) -> dict[str, Any] | None:
    """The task once its `queued_at` mark is written (off the request path): a later change to it
    would otherwise wake the waiters of these tests."""
    task = client.get(f"/v1/tasks/{task_id}").get_json()
    return task if task["queued_at"] is not None else None


def claim(sessions: Any, task_id: str) -> float:
    """pending -> running, as a worker's claim does; returns when it committed (time.monotonic)."""
    with transaction(sessions) as session:
        assert lifecycle.claim(session, uuid.UUID(task_id), "tests#1", 30, 300) is not None
    return time.monotonic()


class Waiter(threading.Thread):
    """One waiting GET, on a client of its own, noting when its answer arrived."""

    def __init__(self, app: Flask, path: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.client, self.path, self.headers = api_client(app), path, headers or {}
        self.answer: Any = None
        self.answered_at = 0.0

    def run(self) -> None:
        self.answer = self.client.get(self.path, headers=self.headers)
        self.answered_at = time.monotonic()


def wait_until_waiting(app: Flask, count: int) -> None:
    events = app.extensions["iaas"].task_events
    poll(lambda: True if events.waiting() >= count else None, timeout=10, what=f"{count} waiters")


@pytest.mark.parametrize(
    "query", ["wait=0", "wait=-1", "wait=60.5", "wait=abc", "wait=nan", "wait=inf", "seen=xyz", "other=1"]
)
def test_bad_wait_parameters_are_400(client: FlaskClient, query: str) -> None:
    task = pending_task(client)
    response = client.get(f"/v1/tasks/{task['id']}?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_the_version_the_etag_and_a_conditional_get(client: FlaskClient, sessions: Any) -> None:
    task = pending_task(client)
    response = client.get(f"/v1/tasks/{task['id']}")
    assert response.headers["ETag"] == f'"{task["version"]}"'
    unchanged = client.get(f"/v1/tasks/{task['id']}", headers={"If-None-Match": response.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == response.headers["ETag"]
    claim(sessions, task["id"])
    changed = client.get(f"/v1/tasks/{task['id']}", headers={"If-None-Match": response.headers["ETag"]})
    assert changed.status_code == 200 and changed.get_json()["status"] == "running"
    assert changed.get_json()["version"] != task["version"]


def test_a_stale_version_is_answered_at_once(client: FlaskClient, sessions: Any) -> None:
    task = pending_task(client)
    claim(sessions, task["id"])
    started = time.monotonic()
    answer = client.get(f"/v1/tasks/{task['id']}?wait=30&seen={task['version']}")
    assert answer.status_code == 200 and answer.get_json()["status"] == "running"
    assert time.monotonic() - started < 5  # not held: far from the 30 s asked for
    other_project = api_client(client.application, project="itest-other")
    assert other_project.get(f"/v1/tasks/{task['id']}?wait=30&seen={task['version']}").status_code == 404


def test_the_wait_ends_with_the_task_as_it_is(client: FlaskClient) -> None:
    task = pending_task(client)
    started = time.monotonic()
    answer = client.get(f"/v1/tasks/{task['id']}", query_string={"wait": 0.5, "seen": task["version"]})
    assert time.monotonic() - started >= 0.5
    assert answer.status_code == 200 and answer.get_json() == task


@pytest.mark.parametrize("by", ["seen", "If-None-Match"])
def test_a_change_answers_the_waiting_request_at_once(
    app: Flask, client: FlaskClient, sessions: Any, by: str
) -> None:
    latencies = []
    for round_ in range(ROUNDS if by == "seen" else 2):
        task = pending_task(client, f"waits-{round_}")
        path, headers = f"/v1/tasks/{task['id']}?wait=30", {"If-None-Match": f'"{task["version"]}"'}
        if by == "seen":
            path, headers = f"{path}&seen={task['version']}", {}
        waiter = Waiter(app, path, headers)
        waiter.start()
        wait_until_waiting(app, 1)
        committed = claim(sessions, task["id"])
        waiter.join(timeout=30)
        assert waiter.answer.status_code == 200
        assert waiter.answer.get_json()["status"] == "running"
        latencies.append(waiter.answered_at - committed)
    WAIT_LATENCIES.extend(("Flask test client", seconds) for seconds in latencies)
    # Loosely: a notification, not the 30 s wait's end (nor a poll of it) answered each.
    assert max(latencies) < 30 / 10, latencies


def test_a_change_while_the_listener_was_disconnected_is_not_lost(
    app: Flask, client: FlaskClient, sessions: Any
) -> None:
    events = app.extensions["iaas"].task_events
    task = pending_task(client)
    waiter = Waiter(app, f"/v1/tasks/{task['id']}?wait=30&seen={task['version']}")
    waiter.start()
    wait_until_waiting(app, 1)
    poll(lambda: True if events.listening.is_set() else None, timeout=10, what="the listener")
    connections = events.connections
    started = time.monotonic()
    # The listener's session ends in the transaction that changes the task: it is gone before the
    # commit sends the notification, so it never receives it.
    with transaction(sessions) as session:
        assert lifecycle.claim(session, uuid.UUID(task["id"]), "tests#1", 30, 300) is not None
        session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": "iaas-task-events"},
        )
    waiter.join(timeout=30)
    assert waiter.answer.get_json()["status"] == "running"
    assert time.monotonic() - started < 10  # woken when the listener listened again, not at 30 s
    assert events.connections > connections


def test_many_waiters_of_one_task_share_the_listener(app: Flask, client: FlaskClient, sessions: Any) -> None:
    task = pending_task(client)
    waiters = [Waiter(app, f"/v1/tasks/{task['id']}?wait=30&seen={task['version']}") for _ in range(20)]
    for waiter in waiters:
        waiter.start()
    wait_until_waiting(app, len(waiters))
    claim(sessions, task["id"])
    for waiter in waiters:
        waiter.join(timeout=30)
    assert {waiter.answer.get_json()["status"] for waiter in waiters} == {"running"}
    assert app.extensions["iaas"].task_events.connections == 1
