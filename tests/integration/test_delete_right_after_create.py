"""A DELETE sent the moment a create is accepted -- before, while or after the worker claims it --
leaves nothing behind: the create is cancelled, or it runs and the destroy follows."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.integration.helpers import assert_hypervisor_matches_database, vm_body, wait_for_task
from tests.support.processes import WorkerProcess


def test_deletes_racing_their_creates_leak_nothing(
    client: FlaskClient, sessions: Any, worker: WorkerProcess
) -> None:
    outcomes: dict[int, int] = {}
    for i in range(20):
        created = client.post("/v1/vms", json=vm_body(f"race-{i}"))
        assert created.status_code == 202
        vm_id = created.get_json()["vm"]["id"]
        while True:  # a busy VM (its create is running) answers 409 vm_busy: ask again, as a client would
            deleted = client.delete(f"/v1/vms/{vm_id}")
            outcomes[deleted.status_code] = outcomes.get(deleted.status_code, 0) + 1
            if deleted.status_code != 409:
                break
            wait_for_task(client, created.headers["Location"])
        assert deleted.status_code == 202, deleted.get_json()
        assert wait_for_task(client, deleted.headers["Location"])["status"] == "succeeded"
    assert_hypervisor_matches_database(sessions, worker.inventory())
