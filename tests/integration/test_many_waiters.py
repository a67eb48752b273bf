"""200 clients wait on a task over real HTTP, against gunicorn with gevent workers as the stack runs
it: each waiting request holds a greenlet and an Event, not a database connection (one listener per
worker process), a normal request is still answered at once meanwhile, and the change answers all
of them within milliseconds."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import text

from api import gunicorn_config
from common import lifecycle
from common.db import transaction
from tests.integration.helpers import vm_body
from tests.support.environment import WAIT_LATENCIES
from tests.support.gunicorn import Server
from tests.support.polling import poll
from tests.support.tokens import bearer, token_for

WAITERS = 200
WAIT_S = 30


class HttpWaiter(threading.Thread):
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.answer: Any = None
        self.answered_at = 0.0

    def run(self) -> None:
        self.answer = requests.get(self.url, headers=self.headers, timeout=WAIT_S + 30)
        self.answered_at = time.monotonic()


def listener_sessions(sessions: Any) -> tuple[int, int]:
    """The test database's sessions: the API's listeners, and all of them."""
    with sessions() as session:
        row = session.execute(
            text(
                "SELECT count(*) FILTER (WHERE application_name = 'iaas-task-events'), count(*) "
                "FROM pg_stat_activity WHERE datname = current_database()"
            )
        ).one()
    return int(row[0]), int(row[1])


@pytest.mark.usefixtures("idle_host")
def test_hundreds_of_waiters_on_gevent(api_server: Server, database: str, sessions: Any) -> None:
    headers = bearer(token_for(database))
    created = requests.post(
        f"{api_server.url}/v1/vms", json=vm_body("waited-on"), headers=headers, timeout=10
    )
    assert created.status_code == 202, created.text
    location = f"{api_server.url}{created.headers['Location']}"

    task = poll(lambda: _marked(location, headers), timeout=10, what="the queued_at mark")
    waiting_url = f"{location}?wait={WAIT_S}&seen={task['version']}"
    waiters = [HttpWaiter(waiting_url, headers) for _ in range(WAITERS)]
    for waiter in waiters:
        waiter.start()
    poll(lambda: True if api_server.client_connections() >= WAITERS else None, timeout=30,
         what=f"{WAITERS} connections")  # fmt: skip

    latencies = []
    for path in ("/readyz", created.headers["Location"]) * 5:
        started = time.monotonic()
        assert requests.get(f"{api_server.url}{path}", headers=headers, timeout=5).status_code == 200
        latencies.append(time.monotonic() - started)
    assert max(latencies) < 2, latencies
    assert not any(waiter.answer for waiter in waiters)  # all still held meanwhile
    listeners, every_session = listener_sessions(sessions)
    assert 1 <= listeners <= 2  # one per gunicorn worker that has waiters
    assert every_session < WAITERS / 2  # no connection per waiter

    with transaction(sessions) as session:
        assert lifecycle.claim(session, uuid.UUID(task["id"]), "tests#1", 30, 300) is not None
    committed = time.monotonic()
    for waiter in waiters:
        waiter.join(timeout=WAIT_S + 30)
    assert {waiter.answer.status_code for waiter in waiters} == {200}
    assert {waiter.answer.json()["status"] for waiter in waiters} == {"running"}
    answered = [waiter.answered_at - committed for waiter in waiters]
    WAIT_LATENCIES.extend((f"gunicorn+gevent, {WAITERS} waiters over HTTP", seconds) for seconds in answered)
    assert max(answered) < WAIT_S / 10, answered  # loosely: the notification answered, not the wait's end
    assert "WORKER TIMEOUT" not in api_server.log()


@pytest.mark.usefixtures("idle_host")
def test_a_graceful_stop_answers_the_waiters_at_once(api_server: Server, database: str) -> None:
    """SIGTERM (a deploy, `make down`): the waiting requests answer their task as it is, instead of
    holding the stop for their whole wait and then being cut off at gunicorn's graceful_timeout."""
    headers = bearer(token_for(database))
    created = requests.post(f"{api_server.url}/v1/vms", json=vm_body("stopping"), headers=headers, timeout=10)
    location = f"{api_server.url}{created.headers['Location']}"
    task = poll(lambda: _marked(location, headers), timeout=10, what="the queued_at mark")
    waiters = [HttpWaiter(f"{location}?wait=60&seen={task['version']}", headers) for _ in range(20)]
    for waiter in waiters:
        waiter.start()
    poll(lambda: True if api_server.client_connections() >= len(waiters) else None, timeout=30,
         what="the waiters' connections")  # fmt: skip
    stopped = time.monotonic()
    api_server.process.send_signal(signal.SIGTERM)
    for waiter in waiters:
        waiter.join(timeout=60)
    assert {waiter.answer.status_code for waiter in waiters} == {200}
    assert {waiter.answer.json()["version"] for waiter in waiters} == {task["version"]}
    assert max(waiter.answered_at for waiter in waiters) - stopped < gunicorn_config.graceful_timeout / 2
    assert api_server.process.wait(timeout=30) == 0


def _marked(location: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """The task once its queued_at mark (a change, written just after the 202) is in."""
    task: dict[str, Any] = requests.get(location, headers=headers, timeout=10).json()
    return task if task["queued_at"] else None
