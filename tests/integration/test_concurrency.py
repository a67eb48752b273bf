"""Races and retries: PostgreSQL decides, so exactly one request wins and a retried one is answered,
not repeated. Requests go through a real threaded HTTP server, many at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from common import hosts
from common.db import transaction
from common.models import IdempotencyKey, Task, Vm
from common.queue import TASK_NAMES, host_queue, make_celery
from tests.integration.helpers import owned_domains, vm_body, wait_for_task
from tests.support.polling import poll
from tests.support.processes import WorkerProcess, start_worker
from worker.sagas.create import CREATE_STEPS


def count(sessions: Any, model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def at_once(n: int, call: Any) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _i: call(), range(n)))


@pytest.mark.usefixtures("idle_host")
def test_fifty_concurrent_creates_with_one_name_make_one_vm(
    http_api: str, sessions: Any, member_headers: dict[str, str]
) -> None:
    responses = at_once(
        50,
        lambda: requests.post(f"{http_api}/v1/vms", json=vm_body("same"), headers=member_headers, timeout=30),
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * 49
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"name_taken"}
    assert count(sessions, Vm) == 1 and count(sessions, Task) == 1


@pytest.mark.usefixtures("idle_host")
def test_twenty_concurrent_requests_with_one_key_make_one_task(
    http_api: str, sessions: Any, member_headers: dict[str, str]
) -> None:
    headers = {"Idempotency-Key": "3f1e0c52-retry-me", **member_headers}
    responses = at_once(
        20, lambda: requests.post(f"{http_api}/v1/vms", json=vm_body("keyed"), headers=headers, timeout=30)
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["task"]["id"] for r in responses}) == 1
    assert len({r.headers["Location"] for r in responses}) == 1
    assert count(sessions, Task) == 1 and count(sessions, Vm) == 1


def test_reconcile_takes_an_idempotency_key_like_every_request_that_makes_a_task(
    http_api: str, sessions: Any, admin_headers: dict[str, str]
) -> None:
    """Twenty retries of one keyed reconcile at once: one task, recorded and queued through the same
    path as a create (the outbox marks it queued); without a key, each request is a run of its own."""
    with transaction(sessions) as session:
        hosts.register(session, "itest-idle")  # known (its worker ran once) but not running now
    headers = {"Idempotency-Key": "reconcile-once", "Content-Type": "application/json", **admin_headers}
    url = f"{http_api}/v1/actions/reconcile"
    body = {"host": "itest-idle"}  # no worker reads that queue: the task stays pending
    responses = at_once(20, lambda: requests.post(url, json=body, headers=headers, timeout=30))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["task"]["id"] for r in responses}) == 1
    assert count(sessions, Task) == 1

    def queued() -> bool | None:
        with sessions() as session:
            return True if session.scalar(select(Task.queued_at)) is not None else None

    poll(queued, timeout=10, what="the reconcile task to be marked queued")
    other = requests.post(url, json=body, headers={**headers, "Idempotency-Key": "another"}, timeout=30)
    plain = requests.post(url, json=body, headers=admin_headers, timeout=30)
    assert other.status_code == plain.status_code == 202 and count(sessions, Task) == 3
    reused = requests.post(url, json={"host": "elsewhere"}, headers=headers, timeout=30)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.usefixtures("idle_host")
def test_a_key_replays_its_first_answer_and_refuses_another_body(client: FlaskClient, sessions: Any) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/vms", json=vm_body("one"), headers=headers)
    again = client.post("/v1/vms", json=vm_body("one"), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json() and again.headers["Location"] == first.headers["Location"]

    other = client.post("/v1/vms", json=vm_body("two"), headers=headers)
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    vm_id = first.get_json()["vm"]["id"]
    elsewhere = client.delete(f"/v1/vms/{vm_id}", headers=headers)
    assert elsewhere.status_code == 422
    assert count(sessions, Task) == 1 and count(sessions, Vm) == 1

    with sessions() as session:
        expires = session.scalar(select(IdempotencyKey.expires_at - IdempotencyKey.created_at))
    assert expires is not None and expires.total_seconds() >= 24 * 3600


@pytest.mark.usefixtures("idle_host")
def test_an_expired_key_is_free_again(client: FlaskClient, sessions: Any) -> None:
    headers = {"Idempotency-Key": "k-old"}
    assert client.post("/v1/vms", json=vm_body("one"), headers=headers).status_code == 202
    with transaction(sessions) as session:
        session.execute(update(IdempotencyKey).values(expires_at=func.now() - func.make_interval(0, 0, 0, 1)))
    assert client.post("/v1/vms", json=vm_body("two"), headers=headers).status_code == 202


@pytest.mark.usefixtures("idle_host")
@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_malformed_keys_are_400(client: FlaskClient, sessions: Any, key: str) -> None:
    response = client.post("/v1/vms", json=vm_body(), headers={"Idempotency-Key": key})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"
    assert count(sessions, Vm) == 0


def test_duplicated_messages_on_two_workers_run_the_saga_once(
    client: FlaskClient, worker: WorkerProcess, broker: redis.Redis, run_dir: Path
) -> None:
    second = start_worker(worker.settings, run_dir)  # two workers (four threads) on one host queue
    try:
        response = client.post("/v1/vms", json=vm_body("dupe"))
        task_id = response.get_json()["task"]["id"]
        celery = make_celery(worker.settings)
        try:  # the same message three more times, as redeliveries would bring it
            for _ in range(3):
                celery.send_task(
                    TASK_NAMES["create_vm"], args=[task_id], queue=host_queue(worker.settings.host)
                )
        finally:
            celery.close()
        task = wait_for_task(client, response.headers["Location"])
        # With acks_late a message leaves Redis's `unacked` hash only once its task returned.
        queue = host_queue(worker.settings.host)
        poll(
            lambda: True if broker.llen(queue) == 0 and broker.hlen("unacked") == 0 else None,
            timeout=15, what="every copy to be consumed and acknowledged",
        )  # fmt: skip
        # The test driver lives inside each worker: between them, exactly one domain was built.
        inventories = [worker.inventory(), second.inventory()]
    finally:
        second.stop()
    after = client.get(response.headers["Location"]).get_json()
    assert after["status"] == "succeeded" and after["attempts"] == 1
    assert [s["name"] for s in after["steps"]] == [s.name for s in CREATE_STEPS]  # each step once
    assert after["finished_at"] == task["finished_at"]
    vm_id = after["vm_id"]
    assert sum(len(owned_domains(inv, vm_id)) for inv in inventories) == 1  # built on one worker only
    assert (
        wait_for_task(client, client.delete(f"/v1/vms/{vm_id}").headers["Location"])["status"] == "succeeded"
    )


def test_two_concurrent_deletes_one_wins_one_is_busy(
    http_api: str, client: FlaskClient, worker: WorkerProcess, member_headers: dict[str, str]
) -> None:
    response = client.post("/v1/vms", json=vm_body("racer"))
    assert wait_for_task(client, response.headers["Location"])["status"] == "succeeded"
    vm_id = response.get_json()["vm"]["id"]
    url = f"{http_api}/v1/vms/{vm_id}"
    responses = at_once(2, lambda: requests.delete(url, headers=member_headers, timeout=30))
    assert sorted(r.status_code for r in responses) == [202, 409]
    [busy] = [r for r in responses if r.status_code == 409]
    assert busy.json()["error"]["code"] == "vm_busy"
    [winner] = [r for r in responses if r.status_code == 202]
    assert wait_for_task(client, winner.headers["Location"])["status"] == "succeeded"
