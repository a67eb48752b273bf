"""Small helpers the integration tests share."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from common.models import Vm
from common.states import VmStatus
from tests.support.invariants import assert_hypervisor_matches_database, owned_domains, owned_volumes
from tests.support.polling import poll

__all__ = [
    "assert_hypervisor_matches_database",
    "delete_every_live_vm",
    "owned_domains",
    "owned_volumes",
    "running_vm",
    "vm_body",
    "wait_for_task",
]

TERMINAL = ("succeeded", "failed")


def vm_body(name: str = "web-1", **overrides: Any) -> dict[str, Any]:
    return {"name": name, "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1, **overrides}


def running_vm(client: FlaskClient, name: str = "power") -> str:
    response = client.post("/v1/vms", json=vm_body(name))
    assert wait_for_task(client, response.headers["Location"])["status"] == "succeeded"
    return str(response.get_json()["vm"]["id"])


def wait_for_task(client: FlaskClient, location: str, timeout: float = 30) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        task = client.get(location).get_json()
        return task if task["status"] in TERMINAL else None

    return poll(finished, timeout=timeout, what=f"task {location} to finish")


def delete_every_live_vm(client: FlaskClient, sessions: Any, inventory: Any) -> None:
    """Delete the test's VMs through the API (its worker destroys them), so that the session's worker
    hands the next test an empty hypervisor; then hold the two to the invariants. `inventory` is the
    worker's (WorkerProcess.inventory), called once they are gone."""
    with sessions() as session:
        live = session.scalars(select(Vm.id).where(Vm.status != VmStatus.DELETED)).all()
    for vm_id in live:
        deleted = client.delete(f"/v1/vms/{vm_id}")
        assert wait_for_task(client, deleted.headers["Location"])["status"] == "succeeded"
    assert_hypervisor_matches_database(sessions, inventory())
