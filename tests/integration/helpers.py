"""Small helpers the integration tests share."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.support.invariants import assert_hypervisor_matches_database, owned_domains, owned_volumes
from tests.support.polling import poll

__all__ = [
    "assert_hypervisor_matches_database",
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
