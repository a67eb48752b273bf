"""Quotas on the real stack: counted in the create's transaction, so no race passes a limit, and given
back when a VM is deleted or its create fails and is compensated."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from common.models import Project, Task, Vm
from tests.integration.helpers import vm_body, wait_for_task
from tests.support.invariants import assert_usage_is_counted
from tests.support.processes import WorkerProcess
from tests.support.tokens import authorize, bearer, token_for


def project_client(app: Flask, **limits: int) -> tuple[FlaskClient, str, str]:
    """A client of a new project with `limits` (the others roomy); returns it, the name, the secret."""
    name = f"quota-{uuid.uuid4().hex[:8]}"
    secret = token_for(app.extensions["iaas"].settings.database_url, name, **limits)
    return authorize(app.test_client(), secret), name, secret


def vms_of(sessions: Any, project: str) -> int:
    with sessions() as session:
        return session.scalar(
            select(func.count(Vm.id)).join(Project).where(Project.name == project, Vm.status != "deleted")
        )


@pytest.mark.usefixtures("idle_host")
def test_fifty_concurrent_creates_never_pass_the_instance_limit(
    http_api: str, app: Flask, sessions: Any
) -> None:
    _client, project, secret = project_client(app, instances=5)
    headers = bearer(secret)

    def create(i: int) -> requests.Response:
        return requests.post(f"{http_api}/v1/vms", json=vm_body(f"racer-{i}"), headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(create, range(50)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 5 + [403] * 45
    refusals = [r.json()["error"] for r in responses if r.status_code == 403]
    assert {e["code"] for e in refusals} == {"quota_exceeded"}
    assert {(e["details"]["resource"], e["details"]["limit"], e["details"]["in_use"]) for e in refusals} == {
        ("instances", 5, 5)
    }
    assert vms_of(sessions, project) == 5
    assert_usage_is_counted(sessions)
    with sessions() as session:
        assert session.scalar(select(func.count(Task.id)).join(Project).where(Project.name == project)) == 5


@pytest.mark.usefixtures("idle_host")
@pytest.mark.parametrize(
    "limits,first,second,resource,in_use,requested",
    [
        ({"vcpus": 4}, {"vcpus": 3}, {"vcpus": 2}, "vcpus", 3, 2),
        ({"memory_mib": 512}, {"memory_mib": 384}, {"memory_mib": 256}, "memory_mib", 384, 256),
        ({"disk_gib": 5}, {"disk_gib": 4}, {"disk_gib": 2}, "disk_gib", 4, 2),
        ({"instances": 1}, {}, {}, "instances", 1, 1),
    ],
)
def test_each_resource_has_its_limit_and_a_refusal_writes_nothing(
    app: Flask, sessions: Any, limits: dict[str, int], first: dict[str, int], second: dict[str, int],
    resource: str, in_use: int, requested: int,
) -> None:  # fmt: skip
    client, project, _ = project_client(app, **limits)
    assert client.post("/v1/vms", json=vm_body("first", **first)).status_code == 202
    refused = client.post("/v1/vms", json=vm_body("second", **second))
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == {
        "resource": resource, "limit": limits[resource], "in_use": in_use, "requested": requested
    }  # fmt: skip
    assert "iaas-admin project set-limits" in error["message"]
    assert vms_of(sessions, project) == 1
    usage = client.get("/v1/project").get_json()["usage"]
    assert usage[resource] == in_use


@pytest.mark.usefixtures("idle_host")
def test_deleting_a_vm_gives_its_quota_back(app: Flask, sessions: Any) -> None:
    client, _, _ = project_client(app, instances=1)
    created = client.post("/v1/vms", json=vm_body("only-one"))
    assert client.post("/v1/vms", json=vm_body("too-many")).status_code == 403
    client.delete(f"/v1/vms/{created.get_json()['vm']['id']}")  # a pending create: cancelled at once
    assert client.get("/v1/project").get_json()["usage"]["instances"] == 0
    assert client.post("/v1/vms", json=vm_body("next-one")).status_code == 202
    assert_usage_is_counted(sessions)


def test_a_deleted_and_a_compensated_vm_give_their_quota_back(
    app: Flask, sessions: Any, worker: WorkerProcess, failpoint: Callable[[str, str], None]
) -> None:
    client, _, _ = project_client(app, instances=1, vcpus=1)
    built = client.post("/v1/vms", json=vm_body("built", vcpus=1))
    assert wait_for_task(client, built.headers["Location"])["status"] == "succeeded"
    deleted = client.delete(f"/v1/vms/{built.get_json()['vm']['id']}")
    assert wait_for_task(client, deleted.headers["Location"])["status"] == "succeeded"
    assert client.get("/v1/project").get_json()["usage"] == {
        "instances": 0, "vcpus": 0, "memory_mib": 0, "disk_gib": 0
    }  # fmt: skip

    failpoint("create_vm.start_domain", "raise")
    doomed = client.post("/v1/vms", json=vm_body("doomed", vcpus=1))
    assert wait_for_task(client, doomed.headers["Location"])["status"] == "failed"
    failpoint("create_vm.start_domain", "off")
    vm = client.get(f"/v1/vms/{doomed.get_json()['vm']['id']}").get_json()
    assert vm["status"] == "error"  # kept to show what happened, but it holds nothing any more
    assert client.get("/v1/project").get_json()["usage"]["instances"] == 0
    again = client.post("/v1/vms", json=vm_body("again", vcpus=1))
    assert again.status_code == 202
    assert wait_for_task(client, again.headers["Location"])["status"] == "succeeded"
    assert_usage_is_counted(sessions)
