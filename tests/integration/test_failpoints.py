"""A failure at every step of create and destroy, each its own test: afterwards nothing exists in
libvirt that the database does not own, and the task tells the truth about what happened."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.integration.helpers import (
    assert_hypervisor_matches_database,
    owned_domains,
    owned_volumes,
    vm_body,
    wait_for_task,
)
from tests.support.processes import WorkerProcess
from tests.support.ssh_keys import ed25519_key, public_line
from worker.hypervisor import network_xml
from worker.sagas.create import CREATE_STEPS
from worker.sagas.destroy import DESTROY_STEPS

CREATE_POINTS = [f"create_vm.{s.name}{suffix}" for s in CREATE_STEPS for suffix in ("", ".done")]
DESTROY_POINTS = [f"destroy_vm.{s.name}{suffix}" for s in DESTROY_STEPS for suffix in ("", ".done")]
SetFailpoint = Callable[[str, str], None]


def post(client: FlaskClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A VM with a NIC, a key and user-data, so that every step (seed, network) has work to do; on a
    network of its own (networks outlive the per-test TRUNCATE of VMs, so each test makes a new one)."""
    network = client.post(
        "/v1/networks", json={"name": f"net-{uuid.uuid4().hex[:8]}", "cidr": "203.0.113.0/29"}
    )
    assert network.status_code == 201, network.get_json()
    key_name = f"key-{uuid.uuid4().hex[:8]}"
    keypair = client.post("/v1/keypairs", json={"name": key_name, "public_key": public_line(ed25519_key())})
    assert keypair.status_code == 201, keypair.get_json()
    body = vm_body(
        name, networks=[network.get_json()["id"]], key_name=key_name, user_data="#!/bin/sh\necho hi\n"
    )
    response = client.post("/v1/vms", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["vm"], wait_for_task(client, response.headers["Location"])


def delete(client: FlaskClient, vm_id: str) -> dict[str, Any]:
    response = client.delete(f"/v1/vms/{vm_id}")
    assert response.status_code == 202, response.get_json()
    return wait_for_task(client, response.headers["Location"])


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_create_failing_at_any_step_is_compensated(
    client: FlaskClient, sessions: Any, worker: WorkerProcess, failpoint: SetFailpoint, point: str
) -> None:
    failpoint(point, "raise")
    vm, task = post(client, "victim")

    assert task["status"] == "failed"
    step = point.split(".")[1]
    assert task["error"]["details"]["step"] == step
    assert task["error"]["details"]["compensated"] is True
    assert f"failpoint {point} triggered" in task["error"]["message"]
    statuses = [s["status"] for s in task["steps"]]
    assert "running" not in statuses and "undoing" not in statuses and "undo_failed" not in statuses
    failed = client.get(f"/v1/vms/{vm['id']}").get_json()
    assert failed["status"] == "error" and failed["addresses"] == []  # its address went back to the pool
    inventory = worker.inventory()
    assert owned_domains(inventory, vm["id"]) == [] and owned_volumes(inventory, vm["id"]) == []
    network = network_xml.network_name(inventory["host"], uuid.UUID(vm["addresses"][0]["network_id"]))
    assert network not in inventory["networks"]  # no other VM was on it: the undo removed it
    assert_hypervisor_matches_database(sessions, inventory)

    assert delete(client, vm["id"])["status"] == "succeeded"  # an `error` VM can always be removed


@pytest.mark.parametrize("point", DESTROY_POINTS)
def test_destroy_failing_at_any_step_leaves_an_error_vm_that_a_retry_removes(
    client: FlaskClient, sessions: Any, worker: WorkerProcess, failpoint: SetFailpoint, point: str
) -> None:
    vm, task = post(client, "victim")
    assert task["status"] == "succeeded"
    failpoint(point, "raise")

    task = delete(client, vm["id"])

    step = point.split(".")[1]
    if step == "mark_deleted" and point.endswith(".done"):
        # The VM is gone and recorded so; only the task's last word failed: `failed`, and nothing leaks.
        assert task["status"] == "failed" and task["error"]["details"]["compensated"] is True
        assert client.get(f"/v1/vms/{vm['id']}").status_code == 404
    else:
        assert task["status"] == "failed" and task["error"]["details"]["step"] == step
        assert client.get(f"/v1/vms/{vm['id']}").get_json()["status"] == "error"
    assert_hypervisor_matches_database(sessions, worker.inventory())

    failpoint(point, "off")
    if client.get(f"/v1/vms/{vm['id']}").status_code == 200:
        assert delete(client, vm["id"])["status"] == "succeeded"
    inventory = worker.inventory()
    assert owned_domains(inventory, vm["id"]) == [] and owned_volumes(inventory, vm["id"]) == []
    assert_hypervisor_matches_database(sessions, inventory)
