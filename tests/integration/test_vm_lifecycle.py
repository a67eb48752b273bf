"""The whole path on real components: HTTP -> PostgreSQL -> Redis -> a celery worker -> libvirt's test
driver, and back through the task the client polls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from tests.integration.helpers import owned_domains, owned_volumes, vm_body, wait_for_task
from tests.support.processes import WorkerProcess

CREATE_STEPS = [
    "claim_vm",
    "create_volume",
    "create_seed",
    "ensure_networks",
    "define_domain",
    "start_domain",
    "mark_running",
]
DESTROY_STEPS = [
    "claim_vm",
    "stop_domain",
    "undefine_domain",
    "delete_volume",
    "delete_seed",
    "delete_console_log",
    "mark_deleted",
]


def create(client: FlaskClient, name: str, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    response = client.post("/v1/vms", json=vm_body(name, **overrides))
    assert response.status_code == 202, response.get_json()
    return response.get_json()["vm"], wait_for_task(client, response.headers["Location"])


def delete(client: FlaskClient, vm_id: str) -> dict[str, Any]:
    response = client.delete(f"/v1/vms/{vm_id}")
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["vm"]["status"] == "deleting"
    return wait_for_task(client, response.headers["Location"])


def test_create_list_get_delete(client: FlaskClient, worker: WorkerProcess) -> None:
    vm, task = create(client, "web-1", vcpus=2, memory_mib=256, disk_gib=2)

    assert task["status"] == "succeeded", task["error"]
    assert [(s["name"], s["status"]) for s in task["steps"]] == [(n, "succeeded") for n in CREATE_STEPS]
    assert task["attempts"] == 1 and task["started_at"] and task["finished_at"]
    got = client.get(f"/v1/vms/{vm['id']}").get_json()
    assert (got["status"], got["power_state"]) == ("running", "running")
    assert (got["vcpus"], got["memory_mib"], got["disk_gib"], got["host"]) == (2, 256, 2, "itest")
    assert [v["id"] for v in client.get("/v1/vms").get_json()["items"]] == [vm["id"]]

    inventory = worker.inventory()
    [domain] = owned_domains(inventory, vm["id"])
    assert domain["uuid"] == vm["id"] and domain["owner_vm_id"] == vm["id"] and domain["active"]
    assert domain["name"] == f"iaas-web-1-{vm['id'].replace('-', '')[:8]}"
    assert owned_volumes(inventory, vm["id"]) == [f"seed-{vm['id']}.iso", f"vm-{vm['id']}.qcow2"]

    task = delete(client, vm["id"])
    assert task["status"] == "succeeded", task["error"]
    assert [(s["name"], s["status"]) for s in task["steps"]] == [(n, "succeeded") for n in DESTROY_STEPS]
    gone = client.get(f"/v1/vms/{vm['id']}")
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "not_found"
    assert client.get("/v1/vms").get_json()["items"] == []
    inventory = worker.inventory()
    assert owned_domains(inventory, vm["id"]) == [] and owned_volumes(inventory, vm["id"]) == []

    # The name of a deleted VM is free again.
    again, task = create(client, "web-1")
    assert task["status"] == "succeeded" and again["id"] != vm["id"]
    assert delete(client, again["id"])["status"] == "succeeded"


def test_vms_are_built_concurrently_and_each_gets_its_own_domain(
    client: FlaskClient, worker: WorkerProcess
) -> None:
    responses = [client.post("/v1/vms", json=vm_body(f"batch-{i}")) for i in range(6)]
    tasks = [wait_for_task(client, r.headers["Location"]) for r in responses]
    assert {t["status"] for t in tasks} == {"succeeded"}
    inventory = worker.inventory()
    ids = [r.get_json()["vm"]["id"] for r in responses]
    assert all(len(owned_domains(inventory, vm_id)) == 1 for vm_id in ids)
    for vm_id in ids:
        assert delete(client, vm_id)["status"] == "succeeded"
    inventory = worker.inventory()
    assert not any(owned_domains(inventory, vm_id) or owned_volumes(inventory, vm_id) for vm_id in ids)


def test_failure_at_a_late_create_step_leaves_nothing_behind(
    client: FlaskClient, worker: WorkerProcess, failpoint: Callable[[str, str], None]
) -> None:
    failpoint("create_vm.mark_running", "raise")

    vm, task = create(client, "doomed")

    assert task["status"] == "failed"
    assert task["error"]["code"] == "step_failed"
    assert task["error"]["details"]["step"] == "mark_running"
    assert task["error"]["details"]["compensated"] is True
    assert "failpoint create_vm.mark_running" in task["error"]["message"]
    steps = {s["name"]: s for s in task["steps"]}
    assert list(steps) == CREATE_STEPS
    # Everything that ran was undone in reverse; the failing step has no undo and stays `failed`.
    assert {name: s["status"] for name, s in steps.items()} == {
        "claim_vm": "undone",
        "create_volume": "undone",
        "create_seed": "undone",
        "ensure_networks": "undone",
        "define_domain": "undone",
        "start_domain": "undone",
        "mark_running": "failed",
    }
    assert "FailpointTriggered" in steps["mark_running"]["error"]
    undo_order = sorted(CREATE_STEPS[:-1], key=lambda name: steps[name]["finished_at"])
    assert undo_order == list(reversed(CREATE_STEPS[:-1]))
    got = client.get(f"/v1/vms/{vm['id']}").get_json()
    assert got["status"] == "error"

    inventory = worker.inventory()
    assert owned_domains(inventory, vm["id"]) == []
    assert owned_volumes(inventory, vm["id"]) == []

    # A VM in `error` can be deleted; its destroy finds nothing to remove and still succeeds.
    task = delete(client, vm["id"])
    assert task["status"] == "succeeded", task["error"]
    assert client.get(f"/v1/vms/{vm['id']}").status_code == 404
