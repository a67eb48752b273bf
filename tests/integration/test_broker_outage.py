"""Redis stopped while requests arrive: the API still accepts them (202), reads keep working, readiness
says the broker is down, and once Redis is back the outbox sweep sends what was committed, so every
accepted request completes. A private Redis, so the machine's shared one is never stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from api.schemas import VmCreate
from api.vm_requests import request_create
from common.config import Settings
from common.db import transaction
from tests.integration.helpers import owned_domains, vm_body, wait_for_task
from tests.support.polling import poll
from tests.support.processes import PrivateRedis, free_port, start_beat, start_worker
from tests.support.testdriver import driver_settings, tiny_image
from tests.support.tokens import api_client, caller_for

HOST = "outage"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path / "redis.log")
    server.start()
    yield server
    server.stop(outage=False)


@pytest.fixture
def outage_settings(private_redis: PrivateRedis, run_dir: Path, sessions: Any) -> Settings:
    """A host whose worker, beat and API use the private Redis; its image is `tiny-outage`."""
    with transaction(sessions) as session:
        session.add(tiny_image(HOST, name="tiny-outage"))
    return driver_settings(
        run_dir, HOST, broker_url=private_redis.url, sweep_interval_s=0.5, outbox_grace_s=0.5
    )


def test_requests_accepted_during_a_redis_outage_complete_after_it(
    private_redis: PrivateRedis, outage_settings: Settings, tmp_path: Path
) -> None:
    settings = outage_settings
    worker = start_worker(settings, tmp_path)
    beat = start_beat(settings, tmp_path)
    app = create_app(settings)
    client: FlaskClient = api_client(app)
    try:
        before = client.post("/v1/vms", json=vm_body("before", image="tiny-outage"))
        assert wait_for_task(client, before.headers["Location"])["status"] == "succeeded"

        private_redis.stop()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["error"]["details"]["checks"] == {"database": "ok", "broker": "down"}
        accepted = []
        for i in range(5):
            response = client.post("/v1/vms", json=vm_body(f"during-{i}", image="tiny-outage"))
            assert response.status_code == 202, response.get_json()
            assert response.get_json()["task"]["queued_at"] is None  # committed, not yet queued
            accepted.append(response)
        assert client.get("/v1/vms").status_code == 200
        assert client.get(accepted[0].headers["Location"]).get_json()["status"] == "pending"

        private_redis.start()  # the same port, and empty: nothing survived in the broker
        poll(lambda: True if client.get("/readyz").status_code == 200 else None, timeout=10, what="readiness")
        tasks = [wait_for_task(client, r.headers["Location"], timeout=60) for r in accepted]
        assert {t["status"] for t in tasks} == {"succeeded"}
        inventory = worker.inventory()
        for response in accepted:
            assert len(owned_domains(inventory, response.get_json()["vm"]["id"])) == 1
    finally:
        beat.stop()
        worker.stop()
        app.extensions["iaas"].close()


def test_a_task_committed_by_an_api_that_died_before_queueing_is_sent_by_the_sweep(
    outage_settings: Settings, sessions: Any, tmp_path: Path
) -> None:
    settings = outage_settings
    """The API commits the rows, then dies before publishing: only the database knows of the task."""
    with transaction(sessions) as session:  # exactly what POST /v1/vms commits, and no publish after
        body = VmCreate.model_validate(vm_body("orphaned", image="tiny-outage"))
        vm, task, _addresses = request_create(session, body, caller_for(settings.database_url))
        location = f"/v1/tasks/{task.id}"
    worker = start_worker(settings, tmp_path)
    beat = start_beat(settings, tmp_path)
    app = create_app(settings)
    try:
        finished = wait_for_task(api_client(app), location, timeout=60)
        assert finished["status"] == "succeeded" and finished["queued_at"] is not None
        assert len(owned_domains(worker.inventory(), str(vm.id))) == 1
    finally:
        beat.stop()
        worker.stop()
        app.extensions["iaas"].close()
