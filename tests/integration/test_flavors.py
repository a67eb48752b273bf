"""Flavors on the real app and PostgreSQL: POST /v1/vms takes a flavor or the three sizes, never both
or neither; a VM made from a flavor has its sizes and counts them against the quota. Also
GET /v1/images/<name>."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from common.db import transaction
from common.flavors import create_flavor
from common.models import Task, Vm
from tests.integration.helpers import vm_body
from tests.support.invariants import assert_usage_is_counted
from tests.support.tokens import authorize, token_for

pytestmark = pytest.mark.usefixtures("idle_host")  # no worker: VMs stay pending

SMALL = {"vcpus": 2, "memory_mib": 256, "disk_gib": 3}


@pytest.fixture
def small(sessions: Any) -> dict[str, int]:
    with transaction(sessions) as session:
        create_flavor(session, "small", **SMALL)
        create_flavor(session, "tiny-1", vcpus=1, memory_mib=64, disk_gib=1)
    return SMALL


def rows(sessions: Any) -> tuple[int, int]:
    with sessions() as session:
        return session.scalar(select(func.count(Vm.id))), session.scalar(select(func.count(Task.id)))


def by_flavor(name: str, flavor: str = "small") -> dict[str, Any]:
    return {"name": name, "image": "tiny", "flavor": flavor}


def test_the_flavors_are_listed_smallest_first_to_any_token(client: FlaskClient, small: Any) -> None:
    listed = client.get("/v1/flavors")
    assert listed.status_code == 200
    items = listed.get_json()["items"]
    assert [(f["name"], f["vcpus"], f["memory_mib"], f["disk_gib"]) for f in items] == [
        ("tiny-1", 1, 64, 1), ("small", 2, 256, 3)
    ]  # fmt: skip
    assert client.get("/v1/flavors", headers={"Authorization": ""}).status_code == 401


def test_a_vm_made_from_a_flavor_has_its_sizes_and_its_task_keeps_them(
    client: FlaskClient, sessions: Any, small: dict[str, int]
) -> None:
    created = client.post("/v1/vms", json=by_flavor("flavored"))
    assert created.status_code == 202, created.get_json()
    vm = created.get_json()["vm"]
    assert {size: vm[size] for size in small} == small
    assert {size: client.get(f"/v1/vms/{vm['id']}").get_json()[size] for size in small} == small
    with sessions() as session:
        task = session.get(Task, uuid.UUID(created.get_json()["task"]["id"]))
        assert task is not None
        assert task.request == {"name": "flavored", "image": "tiny", "flavor": "small", **small}
    assert client.get("/v1/project").get_json()["usage"] == {"instances": 1, **small}


@pytest.mark.parametrize(
    "body,says",
    [
        ({**vm_body("both"), "flavor": "small"}, "not both"),
        ({"name": "both-1", "image": "tiny", "flavor": "small", "vcpus": 1}, "not both"),
        ({"name": "neither", "image": "tiny"}, "missing: vcpus, memory_mib, disk_gib"),
        ({"name": "partial", "image": "tiny", "vcpus": 1, "disk_gib": 1}, "missing: memory_mib"),
    ],
    ids=["flavor-and-sizes", "flavor-and-one-size", "neither", "two-sizes"],
)
def test_a_flavor_and_sizes_or_neither_is_refused_and_writes_nothing(
    client: FlaskClient, sessions: Any, small: Any, body: dict[str, Any], says: str
) -> None:
    refused = client.post("/v1/vms", json=body)
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert says in error["message"] and "flavor" in error["message"]
    assert rows(sessions) == (0, 0)


def test_an_unknown_flavor_is_refused_and_writes_nothing(
    client: FlaskClient, sessions: Any, small: Any
) -> None:
    refused = client.post("/v1/vms", json=by_flavor("ghost", "huge"))
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "unknown_flavor" and error["details"] == {"flavor": "huge"}
    assert "GET /v1/flavors" in error["message"]
    assert rows(sessions) == (0, 0)
    assert client.get("/v1/project").get_json()["usage"]["instances"] == 0


def test_a_flavors_sizes_count_against_the_quota(app: Flask, sessions: Any, small: dict[str, int]) -> None:
    secret = token_for(
        app.extensions["iaas"].settings.database_url, f"flavors-{uuid.uuid4().hex[:6]}", vcpus=3
    )
    client = authorize(app.test_client(), secret)
    assert client.post("/v1/vms", json=by_flavor("first")).status_code == 202
    refused = client.post("/v1/vms", json=by_flavor("second"))
    assert refused.status_code == 403
    assert refused.get_json()["error"]["details"] == {
        "resource": "vcpus", "limit": 3, "in_use": 2, "requested": 2
    }  # fmt: skip
    assert client.post("/v1/vms", json=by_flavor("third", "tiny-1")).status_code == 202
    assert client.get("/v1/project").get_json()["usage"]["vcpus"] == 3
    assert_usage_is_counted(sessions)


def test_an_idempotency_key_covers_the_body_as_sent(client: FlaskClient, small: dict[str, int]) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/vms", json=by_flavor("once"), headers=key)
    again = client.post("/v1/vms", json=by_flavor("once"), headers=key)
    assert first.status_code == again.status_code == 202
    assert again.get_json()["vm"]["id"] == first.get_json()["vm"]["id"]
    same_sizes = client.post("/v1/vms", json={"name": "once", "image": "tiny", **small}, headers=key)
    assert same_sizes.status_code == 422  # the same VM, but not the same request


def test_an_image_is_read_by_name(client: FlaskClient) -> None:
    found = client.get("/v1/images/tiny")
    assert found.status_code == 200
    assert found.get_json() == client.get("/v1/images").get_json()["items"][0]
    for name in ("nope", "Not_A_Label", "x" * 64):
        missing = client.get(f"/v1/images/{name}")
        assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
