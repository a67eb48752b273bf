"""Addresses on the real stack: allocated in the create's transaction (lowest free first, or the one
asked for), distinct under concurrent creates, refused with nothing written when a network is full,
and back in the pool when the VM is deleted or its create compensated. With them the rest of a VM's
first boot: its keypair and its user-data."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api.schemas import MAX_USER_DATA_BYTES
from common.models import IdempotencyKey, Nic, Project, Task, Vm
from tests.integration.helpers import delete_every_live_vm, vm_body, wait_for_task
from tests.support.invariants import assert_usage_is_counted
from tests.support.processes import WorkerProcess
from tests.support.ssh_keys import ACCEPTED, public_line


@pytest.fixture
def tidy_worker(worker: WorkerProcess, client: FlaskClient, sessions: Any) -> Iterator[WorkerProcess]:
    """The session's worker, left with an empty hypervisor after the test (the VMs the test made are
    deleted through the API), which then agrees with the database."""
    yield worker
    delete_every_live_vm(client, sessions, worker.inventory)


def _error(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.get_json()["error"]
    return error


def network(client: FlaskClient, name: str, cidr: str) -> dict[str, Any]:
    made = client.post("/v1/networks", json={"name": name, "cidr": cidr})
    assert made.status_code == 201, made.get_json()
    shown: dict[str, Any] = made.get_json()
    return shown


def create(client: FlaskClient, name: str, **fields: Any) -> dict[str, Any]:
    made = client.post("/v1/vms", json=vm_body(name, **fields))
    assert made.status_code == 202, made.get_json()
    vm: dict[str, Any] = made.get_json()["vm"]
    return vm


def ips(vm: dict[str, Any]) -> list[str]:
    return [address["ip"] for address in vm["addresses"]]


def written(sessions: Any) -> tuple[int, ...]:
    """What a refused create must not have written: VMs, tasks, NICs, idempotency keys, usage."""
    with sessions() as session:
        counts = [
            session.scalar(select(func.count()).select_from(m)) or 0 for m in (Vm, Task, Nic, IdempotencyKey)
        ]
        usage = session.scalar(select(func.sum(Project.used_instances))) or 0
    return (*counts, usage)


@pytest.mark.usefixtures("idle_host")
def test_thirty_concurrent_creates_fill_a_slash_27_and_the_next_is_refused_writing_nothing(
    http_api: str, client: FlaskClient, sessions: Any, member_headers: dict[str, str]
) -> None:
    net = network(client, "race", "198.51.100.32/27")  # 30 usable: .33 to .62

    def post(i: int) -> requests.Response:
        body = vm_body(f"racer-{i}", networks=["race"])
        return requests.post(f"{http_api}/v1/vms", json=body, headers=member_headers, timeout=60)

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(post, range(30)))
    assert [r.status_code for r in answers] == [202] * 30, [r.json() for r in answers if r.status_code != 202]
    given = [r.json()["vm"]["addresses"][0]["ip"] for r in answers]
    every_host = [str(ip) for ip in ipaddress.IPv4Network(net["cidr"]).hosts()]
    assert sorted(given, key=ipaddress.IPv4Address) == every_host  # 30 distinct, none outside
    assert client.get("/v1/networks/race").get_json()["in_use"] == 30
    assert client.get("/v1/networks").get_json()["items"][0]["in_use"] == 30

    before = written(sessions)
    refused = client.post(
        "/v1/vms", json=vm_body("one-more", networks=["race"]), headers={"Idempotency-Key": "k1"}
    )
    assert refused.status_code == 409
    assert _error(refused)["code"] == "network_full"
    assert _error(refused)["details"] == {"network": "race", "cidr": "198.51.100.32/27"}
    assert written(sessions) == before  # no VM, task, NIC, idempotency key, or quota taken
    assert_usage_is_counted(sessions)


@pytest.mark.usefixtures("idle_host")
def test_addresses_are_the_lowest_free_shown_from_the_202_on_by_position(
    client: FlaskClient, sessions: Any
) -> None:
    front = network(client, "front", "203.0.113.0/24")
    back = network(client, "back", "198.51.100.0/29")
    first = create(client, "first", networks=["front", back["id"]])
    assert ips(first) == ["203.0.113.1", "198.51.100.1"]
    assert [(a["network"], a["network_id"]) for a in first["addresses"]] == [
        ("front", front["id"]), ("back", back["id"])
    ]  # fmt: skip
    assert all(a["mac"].startswith("52:54:00:") for a in first["addresses"])
    assert len({a["mac"] for a in first["addresses"]}) == 2
    second = create(
        client, "second", networks=[{"network": "back"}, {"network": "front", "ip": "203.0.113.200"}]
    )
    assert ips(second) == ["198.51.100.2", "203.0.113.200"]
    third = create(client, "third", networks=["front"])
    assert ips(third) == ["203.0.113.2"]  # the lowest free: .200 being taken does not move it
    plain = create(client, "plain")
    assert plain["addresses"] == [] and plain["key_name"] is None and plain["user_data_sha256"] is None

    for vm in (first, second, third, plain):
        assert client.get(f"/v1/vms/{vm['id']}").get_json()["addresses"] == vm["addresses"]
    listed = {vm["name"]: vm["addresses"] for vm in client.get("/v1/vms").get_json()["items"]}
    assert listed == {vm["name"]: vm["addresses"] for vm in (first, second, third, plain)}
    with sessions() as session:  # what the worker reads: nics by position, with the network's CIDR
        rows = session.execute(select(Nic.position, func.host(Nic.ip)).where(Nic.vm_id == first["id"])).all()
    assert sorted(rows) == [(0, "203.0.113.1"), (1, "198.51.100.1")]


@pytest.mark.usefixtures("idle_host")
def test_an_address_asked_for_must_be_a_free_host_address_of_its_network(
    client: FlaskClient, sessions: Any
) -> None:
    network(client, "lan", "198.51.100.0/28")
    create(client, "holder", networks=[{"network": "lan", "ip": "198.51.100.5"}])
    before = written(sessions)
    taken = client.post("/v1/vms", json=vm_body("clash", networks=[{"network": "lan", "ip": "198.51.100.5"}]))
    assert taken.status_code == 409 and _error(taken)["code"] == "ip_in_use"
    assert _error(taken)["details"] == {"network": "lan", "ip": "198.51.100.5"}
    for outside in ("198.51.100.0", "198.51.100.15", "198.51.100.16", "203.0.113.5"):
        refused = client.post("/v1/vms", json=vm_body("off", networks=[{"network": "lan", "ip": outside}]))
        assert refused.status_code == 400, outside
        error = _error(refused)
        assert error["code"] == "invalid_ip"
        assert (error["details"]["first"], error["details"]["last"]) == ("198.51.100.1", "198.51.100.14")
    for malformed in ("198.51.100.05", "198.51.100", "::1", "198.51.100.5/32"):
        refused = client.post("/v1/vms", json=vm_body("bad", networks=[{"network": "lan", "ip": malformed}]))
        assert refused.status_code == 400 and _error(refused)["code"] == "invalid_request", malformed
    assert written(sessions) == before


@pytest.mark.usefixtures("idle_host")
def test_unknown_or_repeated_networks_and_unknown_keys_are_refused_writing_nothing(
    client: FlaskClient, sessions: Any
) -> None:
    lan = network(client, "lan", "198.51.100.0/24")
    before = written(sessions)
    for networks, code in (
        (["nope"], "unknown_network"),
        (["0b6f1d2e-9c1a-4f57-8d43-2f5f6f1c2a10"], "unknown_network"),
        (["lan", "lan"], "invalid_request"),
        (["lan", lan["id"]], "invalid_request"),  # the same network by its name and by its id
        (["lan"] * 9, "invalid_request"),  # at most 8 NICs
        ([{"network": "lan", "ip": "198.51.100.9", "mac": "52:54:00:00:00:01"}], "invalid_request"),
    ):
        refused = client.post("/v1/vms", json=vm_body("refused", networks=networks))
        assert refused.status_code == 400 and _error(refused)["code"] == code, (networks, refused.get_json())
    unknown = client.post("/v1/vms", json=vm_body("refused", networks=["nope"]))
    assert _error(unknown)["details"] == {"network": "nope"}
    no_key = client.post("/v1/vms", json=vm_body("refused", key_name="nokey"))
    assert no_key.status_code == 400 and _error(no_key) == {
        "code": "unknown_keypair",
        "message": "No keypair named 'nokey' in your project; GET /v1/keypairs lists them.",
        "details": {"key_name": "nokey"},
    }
    assert written(sessions) == before


@pytest.mark.usefixtures("idle_host")
def test_a_vm_keeps_its_keypairs_public_key_and_its_user_data(client: FlaskClient, sessions: Any) -> None:
    line = public_line(ACCEPTED["ssh-ed25519"]())
    assert client.post("/v1/keypairs", json={"name": "laptop", "public_key": line}).status_code == 201
    user_data = "#cloud-config\nruncmd:\n  - echo héllo > /dev/console\n"
    vm = create(client, "booted", key_name="laptop", user_data=user_data)
    digest = hashlib.sha256(user_data.encode()).hexdigest()
    assert (vm["key_name"], vm["user_data_sha256"]) == ("laptop", digest)
    assert "user_data" not in vm and "public_key" not in vm
    assert client.delete("/v1/keypairs/laptop").status_code == 204  # the VM keeps the key it was given
    for shown in (client.get(f"/v1/vms/{vm['id']}").get_json(), client.get("/v1/vms").get_json()["items"][0]):
        assert (shown["key_name"], shown["user_data_sha256"]) == ("laptop", digest)
    with sessions() as session:
        row = session.get(Vm, vm["id"])
        assert row is not None and (row.user_data, row.key_name, row.public_key) == (
            user_data,
            "laptop",
            line,
        )
        request = session.scalar(select(Task.request).where(Task.vm_id == vm["id"]))
    assert request is not None and "user_data" not in request and request["user_data_sha256"] == digest


@pytest.mark.usefixtures("idle_host")
@pytest.mark.parametrize("char", ["x", "é", "\u2603"], ids=["1-byte", "2-byte", "3-byte"])
def test_user_data_is_limited_to_64_kib_of_utf8(client: FlaskClient, sessions: Any, char: str) -> None:
    width = len(char.encode())
    fits = char * (MAX_USER_DATA_BYTES // width)
    assert client.post("/v1/vms", json=vm_body("fits", user_data=fits)).status_code == 202
    before = written(sessions)
    over = fits + "x" * (MAX_USER_DATA_BYTES - len(fits.encode()) + 1)
    refused = client.post("/v1/vms", json=vm_body("over", user_data=over))
    assert refused.status_code == 400
    error = _error(refused)
    assert error["code"] == "user_data_too_large"
    assert error["details"] == {"max_bytes": MAX_USER_DATA_BYTES, "bytes": MAX_USER_DATA_BYTES + 1}
    assert written(sessions) == before


@pytest.mark.usefixtures("idle_host")
def test_user_data_postgresql_cannot_hold_is_invalid_request(client: FlaskClient, sessions: Any) -> None:
    for raw in (b'"a\\u0000b"', b'"\\ud800"'):  # a NUL, a lone surrogate
        body = b'{"name": "odd", "image": "tiny", "flavor": "none", "user_data": ' + raw + b"}"
        body = body.replace(b'"flavor": "none"', b'"vcpus": 1, "memory_mib": 128, "disk_gib": 1')
        refused = client.post("/v1/vms", data=body, content_type="application/json")
        assert refused.status_code == 400 and _error(refused)["code"] == "invalid_request", refused.get_json()
        assert _error(refused)["details"]["fields"][0]["field"] == "user_data"
    assert written(sessions) == (0, 0, 0, 0, 0)


def test_a_deleted_vms_address_is_the_next_creates_and_a_compensated_create_holds_none(
    client: FlaskClient, sessions: Any, tidy_worker: WorkerProcess, failpoint: Callable[[str, str], None]
) -> None:
    network(client, "pool", "198.51.100.0/29")
    made = [client.post("/v1/vms", json=vm_body(f"vm-{i}", networks=["pool"])) for i in range(3)]
    for response in made:
        assert wait_for_task(client, response.headers["Location"])["status"] == "succeeded"
    vms = [response.get_json()["vm"] for response in made]
    assert [ips(vm) for vm in vms] == [["198.51.100.1"], ["198.51.100.2"], ["198.51.100.3"]]
    in_use = client.delete("/v1/networks/pool")
    assert in_use.status_code == 409 and len(_error(in_use)["details"]["vm_ids"]) == 3

    gone = client.delete(f"/v1/vms/{vms[1]['id']}")  # the real worker destroys it
    assert ips(gone.get_json()["vm"]) == ["198.51.100.2"]  # held while it is being deleted
    assert wait_for_task(client, gone.headers["Location"])["status"] == "succeeded"
    assert client.get("/v1/networks/pool").get_json()["in_use"] == 2
    reuser = client.post("/v1/vms", json=vm_body("reuser", networks=["pool"]))
    assert ips(reuser.get_json()["vm"]) == ["198.51.100.2"]
    assert wait_for_task(client, reuser.headers["Location"])["status"] == "succeeded"  # before the failpoint

    failpoint("create_vm.start_domain", "raise")
    doomed = client.post("/v1/vms", json=vm_body("doomed", networks=["pool"]))
    assert ips(doomed.get_json()["vm"]) == ["198.51.100.4"]
    assert wait_for_task(client, doomed.headers["Location"])["status"] == "failed"
    failpoint("create_vm.start_domain", "off")
    kept = client.get(f"/v1/vms/{doomed.get_json()['vm']['id']}").get_json()
    assert kept["status"] == "error" and kept["addresses"] == []  # compensated: it holds nothing
    assert ips(create(client, "after", networks=["pool"])) == ["198.51.100.4"]
    assert_usage_is_counted(sessions)  # and no NIC of a VM that holds no quota


def test_a_network_can_be_deleted_once_its_vms_are(client: FlaskClient, tidy_worker: WorkerProcess) -> None:
    network(client, "short", "203.0.113.0/29")
    made = client.post("/v1/vms", json=vm_body("tenant", networks=["short"]))
    assert wait_for_task(client, made.headers["Location"])["status"] == "succeeded"
    refused = client.delete("/v1/networks/short")
    assert refused.status_code == 409 and _error(refused)["details"]["vm_ids"] == [
        made.get_json()["vm"]["id"]
    ]
    gone = client.delete(f"/v1/vms/{made.get_json()['vm']['id']}")
    assert wait_for_task(client, gone.headers["Location"])["status"] == "succeeded"
    assert client.delete("/v1/networks/short").status_code == 204


@pytest.mark.usefixtures("idle_host")
def test_a_create_without_networks_key_or_user_data_costs_no_statement_more(
    client: FlaskClient, app: Any
) -> None:
    """The accept path's one INSERT (common/lifecycle.py): the new fields add no query unless asked for."""
    from sqlalchemy import event

    engine = app.extensions["iaas"].engine
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert client.post("/v1/vms", json=vm_body("lean")).status_code == 202
        lean = list(statements)
        network(client, "lan", "198.51.100.0/24")
        statements.clear()
        assert client.post("/v1/vms", json=vm_body("rich", networks=["lan"])).status_code == 202
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(lean) == 1 and lean[0].lstrip().startswith("WITH quota AS"), lean
    assert len(statements) == 3  # the insert, the lock of the network, the NIC on its lowest free address
