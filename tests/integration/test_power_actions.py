"""Start, stop and reboot through the API, on a real worker and libvirt's test driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.integration.helpers import (
    assert_hypervisor_matches_database,
    owned_domains,
    running_vm,
    vm_body,
    wait_for_task,
)
from tests.support.processes import WorkerProcess


def act(client: FlaskClient, vm_id: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = (
        client.post(f"/v1/vms/{vm_id}/{action}", json=body)
        if body is not None
        else client.post(f"/v1/vms/{vm_id}/{action}")
    )
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["task"]["kind"] == f"{action}_vm"
    return wait_for_task(client, response.headers["Location"])


def domain_active(worker: WorkerProcess, vm_id: str) -> bool:
    [domain] = owned_domains(worker.inventory(), vm_id)
    return bool(domain["active"])


def vm(client: FlaskClient, vm_id: str) -> tuple[str, str]:
    body = client.get(f"/v1/vms/{vm_id}").get_json()
    return body["status"], body["power_state"]


def test_stop_start_reboot(client: FlaskClient, worker: WorkerProcess, sessions: Any) -> None:
    vm_id = running_vm(client)

    task = act(client, vm_id, "stop")
    assert task["status"] == "succeeded", task["error"]
    assert [s["name"] for s in task["steps"]] == ["claim_vm", "shutdown_domain", "mark_stopped"]
    # The test driver's guests obey the power button at once.
    assert task["result"]["shutdown"] == "graceful" and task["result"]["vm_id"] == vm_id
    assert 0 <= task["result"]["waited_s"] < 5
    assert vm(client, vm_id) == ("stopped", "shutoff") and not domain_active(worker, vm_id)

    assert act(client, vm_id, "start")["status"] == "succeeded"
    assert vm(client, vm_id) == ("running", "running") and domain_active(worker, vm_id)

    reboot = act(client, vm_id, "reboot")
    assert reboot["status"] == "succeeded" and reboot["result"]["reboot"] == "acpi"
    assert vm(client, vm_id) == ("running", "running") and domain_active(worker, vm_id)
    assert act(client, vm_id, "reboot", {"force": True})["result"]["reboot"] == "reset"

    forced = act(client, vm_id, "stop", {"force": True})
    assert forced["status"] == "succeeded" and forced["result"]["shutdown"] == "forced"
    assert vm(client, vm_id) == ("stopped", "shutoff") and not domain_active(worker, vm_id)
    assert_hypervisor_matches_database(sessions, worker.inventory())
    assert (
        wait_for_task(client, client.delete(f"/v1/vms/{vm_id}").headers["Location"])["status"] == "succeeded"
    )


@pytest.mark.parametrize(("action", "state_after_stop"), [("start", False), ("stop", True), ("reboot", True)])
def test_actions_that_make_no_sense_are_409_invalid_state(
    client: FlaskClient, worker: WorkerProcess, action: str, state_after_stop: bool
) -> None:
    vm_id = running_vm(client)
    if state_after_stop:
        assert act(client, vm_id, "stop")["status"] == "succeeded"
    response = client.post(f"/v1/vms/{vm_id}/{action}")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "invalid_state"
    assert (
        wait_for_task(client, client.delete(f"/v1/vms/{vm_id}").headers["Location"])["status"] == "succeeded"
    )


@pytest.mark.usefixtures("idle_host")
def test_a_second_action_while_one_is_pending_is_409_vm_busy(client: FlaskClient) -> None:
    vm_id = client.post("/v1/vms", json=vm_body("busy")).get_json()["vm"]["id"]
    response = client.post(f"/v1/vms/{vm_id}/stop")
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "vm_busy"


@pytest.mark.usefixtures("idle_host")
@pytest.mark.parametrize("body", ['{"force": "yes"}', '{"forse": true}', "[1]"])
def test_bad_power_bodies_are_400(client: FlaskClient, body: str) -> None:
    vm_id = client.post("/v1/vms", json=vm_body("bodies")).get_json()["vm"]["id"]
    response = client.post(f"/v1/vms/{vm_id}/stop", data=body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "point",
    ["start_vm.start_domain", "start_vm.mark_running", "stop_vm.shutdown_domain", "reboot_vm.reboot_domain"],
)
def test_a_failing_power_step_leaves_the_database_telling_the_truth(
    client: FlaskClient,
    worker: WorkerProcess,
    sessions: Any,
    failpoint: Callable[[str, str], None],
    point: str,
) -> None:
    vm_id = running_vm(client)
    if point.startswith("start_vm"):
        assert act(client, vm_id, "stop")["status"] == "succeeded"
    failpoint(point, "raise")
    task = act(client, vm_id, point.split("_vm")[0])
    assert task["status"] == "failed" and task["error"]["details"]["step"] == point.split(".")[1]
    status, power = vm(client, vm_id)
    active = domain_active(worker, vm_id)
    assert (status, power) == (("running", "running") if active else ("stopped", "shutoff"))
    failpoint(point, "off")
    assert (
        wait_for_task(client, client.delete(f"/v1/vms/{vm_id}").headers["Location"])["status"] == "succeeded"
    )
    assert_hypervisor_matches_database(sessions, worker.inventory())
