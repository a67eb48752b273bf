"""Tokens and scope on the real app and PostgreSQL: who may call, and what each project sees."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from api import create_app
from common import hosts
from common.config import Settings
from common.db import transaction
from common.models import Task, Token
from common.tokens import Role, secret_hash
from tests.integration.helpers import vm_body
from tests.support.polling import poll
from tests.support.tokens import api_client, authorize, token_for

pytestmark = pytest.mark.usefixtures("idle_host")  # no worker: VMs stay pending, tasks stay queued


@pytest.fixture
def uncached_app(settings: Settings, database: str) -> Any:
    """An API that reads the token on every call (IAAS_TOKEN_CACHE_S=0): revocation is immediate."""
    app = create_app(settings.model_copy(update={"token_cache_s": 0}))
    yield app
    app.extensions["iaas"].close()


def _error(response: Any) -> str:
    return response.get_json()["error"]["code"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer iaas_not-a-real-token",
        "Bearer é" * 3,
    ],
    ids=["missing", "no-secret", "blank", "basic", "other-scheme", "unknown", "not-ascii"],
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/vms"), ("POST", "/v1/vms"), ("GET", "/v1/images"), ("GET", "/v1/project"),
        ("POST", "/v1/actions/reconcile"), ("GET", f"/v1/tasks/{uuid.uuid4()}"),
        ("DELETE", f"/v1/vms/{uuid.uuid4()}"), ("POST", f"/v1/vms/{uuid.uuid4()}/start"),
    ],
)  # fmt: skip
def test_every_v1_call_without_a_valid_token_is_401_and_writes_nothing(
    app: Flask, sessions: Any, header: str | None, method: str, path: str
) -> None:
    client = app.test_client()
    headers = {"Authorization": header} if header is not None else {}
    response = client.open(path, method=method, json=vm_body("nope"), headers=headers)
    assert response.status_code == 401 and _error(response) == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "iaas-admin token create" in response.get_json()["error"]["message"]
    with sessions() as session:
        assert session.scalars(select(Task)).all() == []


def test_health_checks_stay_open(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_revoked_token_is_refused_at_once_without_the_cache(uncached_app: Flask, sessions: Any) -> None:
    secret = token_for(uncached_app.extensions["iaas"].settings.database_url, "revoke-me")
    client = authorize(uncached_app.test_client(), secret)
    assert client.get("/v1/vms").status_code == 200
    with transaction(sessions) as session:
        session.execute(
            update(Token)
            .where(Token.secret_sha256 == secret_hash(secret))
            .values(revoked_at=datetime.now(UTC))
        )
    refused = client.get("/v1/vms")
    assert refused.status_code == 401 and "revoked" in refused.get_json()["error"]["message"]


def test_a_revoked_token_is_refused_within_the_cache_time(app: Flask, sessions: Any) -> None:
    secret = token_for(app.extensions["iaas"].settings.database_url, "revoke-cached")
    client = authorize(app.test_client(), secret)
    assert client.get("/v1/vms").status_code == 200  # now cached
    with transaction(sessions) as session:
        session.execute(
            update(Token)
            .where(Token.secret_sha256 == secret_hash(secret))
            .values(revoked_at=datetime.now(UTC))
        )
    ttl = app.extensions["iaas"].settings.token_cache_s
    poll(lambda: True if client.get("/v1/vms").status_code == 401 else None, timeout=ttl + 5,
         what="the revoked token to be refused")  # fmt: skip


def test_an_expired_token_is_refused_even_while_cached(app: Flask, sessions: Any) -> None:
    secret = token_for(app.extensions["iaas"].settings.database_url, "expiring")
    client = authorize(app.test_client(), secret)
    with transaction(sessions) as session:
        session.execute(
            update(Token)
            .where(Token.secret_sha256 == secret_hash(secret))
            .values(expires_at=datetime.now(UTC) + timedelta(seconds=1))
        )
    poll(lambda: True if client.get("/v1/vms").status_code == 401 else None, timeout=10,
         what="the token to expire")  # fmt: skip
    assert "expired" in client.get("/v1/vms").get_json()["error"]["message"]


def test_members_may_not_reconcile_or_list_every_project(client: FlaskClient, sessions: Any) -> None:
    with transaction(sessions) as session:
        hosts.register(session, "itest")
    for response in (
        client.post("/v1/actions/reconcile", json={"host": "itest"}),
        client.get("/v1/vms?all_projects=true"),
    ):
        assert response.status_code == 403 and _error(response) == "forbidden"
        assert "admin" in response.get_json()["error"]["message"]
    with sessions() as session:
        assert session.scalars(select(Task)).all() == []


def test_reconcile_goes_only_to_a_host_a_worker_ever_served(app: Flask, sessions: Any) -> None:
    admin = api_client(app, role=Role.ADMIN)
    with transaction(sessions) as session:
        hosts.register(session, "itest-known")
    unknown = admin.post("/v1/actions/reconcile", json={"host": "no-such-host"})
    assert unknown.status_code == 404 and _error(unknown) == "unknown_host"
    assert "itest-known" in unknown.get_json()["error"]["details"]["known_hosts"]
    known = admin.post("/v1/actions/reconcile", json={"host": "itest-known"})
    assert known.status_code == 202
    with sessions() as session:
        assert [t.request for t in session.scalars(select(Task))] == [{"host": "itest-known"}]


def test_another_projects_vm_and_task_do_not_exist_for_you(app: Flask) -> None:
    alice, bob = api_client(app, "alice"), api_client(app, "bob")
    created = alice.post("/v1/vms", json=vm_body("shared-name"))
    assert created.status_code == 202
    vm_id, location = created.get_json()["vm"]["id"], created.headers["Location"]
    assert created.get_json()["vm"]["project"] == "alice"

    for response in (
        bob.get(f"/v1/vms/{vm_id}"),
        bob.delete(f"/v1/vms/{vm_id}"),
        bob.post(f"/v1/vms/{vm_id}/start"),
        bob.post(f"/v1/vms/{vm_id}/stop"),
        bob.post(f"/v1/vms/{vm_id}/reboot"),
        bob.get(location),
    ):
        assert response.status_code == 404 and _error(response) == "not_found"
    # Exactly as if it did not exist: the same answer as for an id nobody has, but for the id.
    nobodys = str(uuid.uuid4())
    seen = bob.get(f"/v1/vms/{vm_id}").get_data(as_text=True).replace(vm_id, nobodys)
    assert seen == bob.get(f"/v1/vms/{nobodys}").get_data(as_text=True)
    assert bob.get("/v1/vms").get_json()["items"] == []
    assert alice.get(f"/v1/vms/{vm_id}").status_code == 200  # untouched by bob's attempts
    assert alice.get(location).status_code == 200

    # Names are unique per project: bob may use alice's name, alice may not use it twice.
    assert bob.post("/v1/vms", json=vm_body("shared-name")).status_code == 202
    again = alice.post("/v1/vms", json=vm_body("shared-name"))
    assert again.status_code == 409 and _error(again) == "name_taken"


def test_an_admin_lists_every_project_with_its_name(app: Flask) -> None:
    alice, bob = api_client(app, "alice"), api_client(app, "bob")
    admin = api_client(app, "ops", Role.ADMIN)
    for who, name in ((alice, "a-vm"), (bob, "b-vm")):
        assert who.post("/v1/vms", json=vm_body(name)).status_code == 202
    assert admin.get("/v1/vms").get_json()["items"] == []  # an admin's own project is empty
    every = admin.get("/v1/vms?all_projects=true").get_json()["items"]
    assert {(vm["name"], vm["project"]) for vm in every} == {("a-vm", "alice"), ("b-vm", "bob")}
    b_vm = next(vm for vm in every if vm["project"] == "bob")
    assert admin.get(f"/v1/vms/{b_vm['id']}").get_json()["project"] == "bob"


def test_idempotency_keys_are_per_project(app: Flask) -> None:
    alice, bob = api_client(app, "alice"), api_client(app, "bob")
    key = {"Idempotency-Key": "same-key-in-two-projects"}
    first = alice.post("/v1/vms", json=vm_body("keyed"), headers=key)
    second = bob.post("/v1/vms", json=vm_body("keyed"), headers=key)
    assert first.status_code == second.status_code == 202
    assert first.get_json()["task"]["id"] != second.get_json()["task"]["id"]
    assert second.get_json()["vm"]["project"] == "bob"
    replay = alice.post("/v1/vms", json=vm_body("keyed"), headers=key)
    assert replay.get_json()["task"]["id"] == first.get_json()["task"]["id"]


def test_every_task_records_who_asked(app: Flask, sessions: Any) -> None:
    secret = token_for(app.extensions["iaas"].settings.database_url, "audited")
    client = authorize(app.test_client(), secret)
    created = client.post("/v1/vms", json=vm_body("audited-vm"))
    shown = client.get(created.headers["Location"]).get_json()["requested_by"]
    with sessions() as session:
        token = session.scalar(select(Token).where(Token.secret_sha256 == secret_hash(secret)))
    assert token is not None
    assert shown == {"token_id": str(token.id), "token_name": token.name, "project": "audited"}
    assert created.get_json()["task"]["requested_by"] == shown
    deleted = client.delete(f"/v1/vms/{created.get_json()['vm']['id']}")
    assert deleted.get_json()["task"]["requested_by"] == shown


def test_the_project_shows_its_limits_usage_and_token(client: FlaskClient, app: Flask) -> None:
    before = client.get("/v1/project").get_json()
    assert before["name"] == "itest" and before["token"]["role"] == "member"
    assert set(before["limits"]) == set(before["usage"]) == {"instances", "vcpus", "memory_mib", "disk_gib"}
    client.post("/v1/vms", json=vm_body("counted", vcpus=3, memory_mib=256, disk_gib=2))
    after = client.get("/v1/project").get_json()["usage"]
    expected = {"instances": 1, "vcpus": 3, "memory_mib": 256, "disk_gib": 2}
    assert {k: after[k] - before["usage"][k] for k in after} == expected
