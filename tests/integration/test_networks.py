"""Networks on the real app and PostgreSQL: each project's own, by id or by name, with a CIDR taken
only as an IPv4 network by its network address; another project's is not found; one with NICs on it
cannot be deleted; a delete asks every host's worker to remove it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select

from common import hosts
from common.db import transaction
from common.models import Host, Network
from common.queue import REMOVE_NETWORK, host_queue
from common.tokens import Role
from tests.integration.helpers import vm_body
from tests.support.tokens import api_client

pytestmark = pytest.mark.usefixtures("idle_host")  # VMs stay pending: no worker needed here


def _error(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.get_json()["error"]
    return error


def networks_in_db(sessions: Any) -> int:
    with sessions() as session:
        return session.scalar(select(func.count(Network.id))) or 0


def test_a_network_is_added_read_by_id_and_name_listed_and_deleted(client: FlaskClient) -> None:
    made = client.post("/v1/networks", json={"name": "backend", "cidr": "198.51.100.0/24"})
    assert made.status_code == 201, made.get_json()
    shown = made.get_json()
    assert made.headers["Location"] == f"/v1/networks/{shown['id']}"
    assert {k: v for k, v in shown.items() if k not in ("id", "created_at")} == {
        "name": "backend", "cidr": "198.51.100.0/24", "prefix": 24, "size": 256, "usable": 254, "in_use": 0,
    }  # fmt: skip
    assert client.get(f"/v1/networks/{shown['id']}").get_json() == shown
    assert client.get("/v1/networks/backend").get_json() == shown
    assert client.get("/v1/networks").get_json() == {"items": [shown], "next_cursor": None}
    gone = client.delete("/v1/networks/backend")
    assert gone.status_code == 204 and gone.get_data() == b""
    for path in (f"/v1/networks/{shown['id']}", "/v1/networks/backend"):
        assert _error(client.get(path))["code"] == "not_found"
        assert _error(client.delete(path))["code"] == "not_found"
    assert client.get("/v1/networks").get_json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "cidr,says",
    [
        ("198.51.100.7/24", "use 198.51.100.0/24"),
        ("2001:db8::/64", "IPv6"),
        ("10.0.0.0/8", "too large"),
        ("198.51.100.0/30", "too small"),
        ("198.51.100.0", "CIDR notation"),
        ("198.51.100.0/255.255.255.0", "CIDR notation"),
        ("300.1.2.0/24", "not an IPv4 address"),
        ("x" * 65, "at most 64 characters"),
    ],
)
def test_a_bad_cidr_is_400_naming_the_field_and_writes_nothing(
    client: FlaskClient, sessions: Any, cidr: str, says: str
) -> None:
    refused = client.post("/v1/networks", json={"name": "bad", "cidr": cidr})
    assert refused.status_code == 400
    error = _error(refused)
    assert error["code"] == "invalid_request"
    assert [field["field"] for field in error["details"]["fields"]] == ["cidr"]
    assert says in error["message"] + error["details"]["fields"][0]["message"]
    assert networks_in_db(sessions) == 0


def test_a_bad_body_or_a_uuid_shaped_name_is_invalid_request(client: FlaskClient) -> None:
    for body in (
        {"name": "Bad_Name", "cidr": "198.51.100.0/24"},
        {"name": "n"},
        {"name": "n", "cidr": "198.51.100.0/24", "x": 1},
        {"name": "n", "cidr": 24},
        {"name": "0b6f1d2e-9c1a-4f57-8d43-2f5f6f1c2a10", "cidr": "198.51.100.0/24"},
    ):
        assert _error(client.post("/v1/networks", json=body))["code"] == "invalid_request", body


def test_a_name_is_one_projects_and_taken_there_only(app: Flask, client: FlaskClient) -> None:
    other = api_client(app, "proj-a")
    admin = api_client(app, "proj-b", Role.ADMIN)
    mine = client.post("/v1/networks", json={"name": "lan", "cidr": "198.51.100.0/24"}).get_json()
    taken = client.post("/v1/networks", json={"name": "lan", "cidr": "203.0.113.0/24"})
    assert taken.status_code == 409 and _error(taken) == {
        "code": "name_taken", "message": "A network named 'lan' already exists.", "details": {"name": "lan"}
    }  # fmt: skip

    assert other.get("/v1/networks").get_json() == {"items": [], "next_cursor": None}
    for caller in (other, admin):  # an admin too: a network is its project's alone
        for path in ("/v1/networks/lan", f"/v1/networks/{mine['id']}"):
            missing = caller.get(path)
            assert missing.status_code == 404 and _error(missing)["code"] == "not_found"
            assert caller.delete(path).status_code == 404
        # nor can its VMs be put on it, by name or by id: as if it did not exist
        for ref in ("lan", mine["id"]):
            refused = caller.post("/v1/vms", json=vm_body("sneaky", networks=[ref]))
            assert refused.status_code == 400 and _error(refused)["code"] == "unknown_network"
    theirs = other.post("/v1/networks", json={"name": "lan", "cidr": "198.51.100.0/24"})
    assert theirs.status_code == 201  # the same name and even the same range: networks are isolated
    assert client.get("/v1/networks/lan").get_json() == mine
    assert client.delete("/v1/networks/lan").status_code == 204
    assert other.get("/v1/networks/lan").status_code == 200


def test_the_list_pages_like_the_vms(client: FlaskClient) -> None:
    made = [
        client.post("/v1/networks", json={"name": f"n{i}", "cidr": f"10.{i}.0.0/16"}).get_json()
        for i in range(5)
    ]
    first = client.get("/v1/networks?limit=2").get_json()
    assert [n["name"] for n in first["items"]] == ["n0", "n1"] and first["next_cursor"]
    second = client.get(f"/v1/networks?limit=2&cursor={first['next_cursor']}").get_json()
    third = client.get(f"/v1/networks?limit=2&cursor={second['next_cursor']}").get_json()
    assert [n["name"] for n in second["items"] + third["items"]] == ["n2", "n3", "n4"]
    assert third["next_cursor"] is None
    assert client.get("/v1/networks?limit=500").get_json()["items"] == made
    assert _error(client.get("/v1/networks?cursor=nonsense"))["code"] == "invalid_request"
    assert _error(client.get("/v1/networks?limit=0"))["code"] == "invalid_request"


def test_a_network_with_nics_is_in_use_until_its_vms_are_gone(client: FlaskClient, sessions: Any) -> None:
    network = client.post("/v1/networks", json={"name": "busy", "cidr": "203.0.113.0/29"}).get_json()
    vms = [
        client.post("/v1/vms", json=vm_body(f"on-{i}", networks=["busy"])).get_json()["vm"] for i in range(2)
    ]
    assert client.get("/v1/networks/busy").get_json()["in_use"] == 2
    refused = client.delete(f"/v1/networks/{network['id']}")
    assert refused.status_code == 409
    error = _error(refused)
    assert error["code"] == "network_in_use"
    assert error["details"] == {"network": "busy", "vm_ids": sorted(vm["id"] for vm in vms)}
    for vm in vms:  # pending: cancelled at once, which releases the address in the same transaction
        assert client.delete(f"/v1/vms/{vm['id']}").get_json()["vm"]["status"] == "deleted"
    assert client.get("/v1/networks/busy").get_json()["in_use"] == 0
    assert client.delete(f"/v1/networks/{network['id']}").status_code == 204
    assert networks_in_db(sessions) == 0


@pytest.fixture
def quiet_host(sessions: Any, broker: redis.Redis) -> Iterator[str]:
    """A host that has a worker as far as the database knows, whose queue nobody reads."""
    name = "itest-quiet"
    with transaction(sessions) as session:
        hosts.register(session, name)
    broker.delete(host_queue(name))
    yield name
    with transaction(sessions) as session:
        session.execute(delete(Host).where(Host.name == name))
    broker.delete(host_queue(name))


def test_a_delete_asks_every_hosts_worker_to_remove_the_network(
    client: FlaskClient, broker: redis.Redis, quiet_host: str
) -> None:
    """Sent to each host of the hosts table after the commit (the one whose queue nobody reads here
    keeps the message to look at; a running test worker would take its own)."""
    network = client.post("/v1/networks", json={"name": "doomed", "cidr": "198.51.100.0/24"}).get_json()
    assert client.delete("/v1/networks/doomed").status_code == 204
    sent = [json.loads(message) for message in broker.lrange(host_queue(quiet_host), 0, -1)]
    assert [message["headers"]["task"] for message in sent] == [REMOVE_NETWORK]
    args, kwargs, _embed = json.loads(base64.b64decode(sent[0]["body"]))
    assert (args, kwargs) == ([network["id"]], {})
