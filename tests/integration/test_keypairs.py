"""Keypairs on the real app and PostgreSQL: each project's own, by name, with the key checked and
fingerprinted; another project's is not found."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from common.models import Keypair
from common.tokens import Role
from tests.support.ssh_keys import ACCEPTED, expected_fingerprint, public_line, rsa_key
from tests.support.tokens import api_client


def _error(response: Any) -> str:
    return response.get_json()["error"]["code"]


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_a_key_of_each_accepted_type_is_added_read_listed_and_deleted(client: FlaskClient, kind: str) -> None:
    line = public_line(ACCEPTED[kind]())
    made = client.post("/v1/keypairs", json={"name": "laptop", "public_key": f"{line} me@laptop"})
    assert made.status_code == 201, made.get_json()
    assert made.headers["Location"] == "/v1/keypairs/laptop"
    shown = made.get_json()
    assert shown["name"] == "laptop" and shown["type"] == kind
    assert shown["public_key"] == f"{line} me@laptop"
    assert shown["fingerprint"] == expected_fingerprint(line)
    assert client.get("/v1/keypairs/laptop").get_json() == shown
    assert client.get("/v1/keypairs").get_json() == {"items": [shown]}
    gone = client.delete("/v1/keypairs/laptop")
    assert gone.status_code == 204 and gone.get_data() == b""
    assert _error(client.get("/v1/keypairs/laptop")) == "not_found"
    assert _error(client.delete("/v1/keypairs/laptop")) == "not_found"
    assert client.get("/v1/keypairs").get_json() == {"items": []}


@pytest.mark.parametrize(
    "public_key",
    [
        "not a key",
        "ssh-ed25519 AAAA",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        "ssh-ed25519 " + "A" * 17_000,
    ],
    ids=["garbage", "truncated", "private", "too-long"],
)
def test_an_invalid_key_is_400_saying_what_is_accepted_and_writes_nothing(
    client: FlaskClient, sessions: Any, public_key: str
) -> None:
    refused = client.post("/v1/keypairs", json={"name": "bad", "public_key": public_key})
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "invalid_public_key"
    assert "ssh-ed25519" in error["message"] and "ssh-rsa of at least 2048 bits" in error["message"]
    assert public_key not in error["message"]
    with sessions() as session:
        assert session.scalar(select(func.count(Keypair.id))) == 0


def test_a_short_rsa_key_is_refused(client: FlaskClient) -> None:
    refused = client.post("/v1/keypairs", json={"name": "old", "public_key": public_line(rsa_key(1024))})
    assert refused.status_code == 400 and "1024 bits" in refused.get_json()["error"]["message"]


def test_a_bad_body_is_invalid_request(client: FlaskClient) -> None:
    key = public_line(ACCEPTED["ssh-ed25519"]())
    for body in (
        {"name": "Bad_Name", "public_key": key},
        {"name": "k"},
        {"name": "k", "public_key": key, "x": 1},
    ):
        assert _error(client.post("/v1/keypairs", json=body)) == "invalid_request"


def test_a_name_is_one_projects_and_taken_there_only(app: Flask, client: FlaskClient) -> None:
    other = api_client(app, "proj-a")
    admin = api_client(app, "proj-b", Role.ADMIN)
    mine, theirs = (public_line(ACCEPTED["ssh-ed25519"]()) for _ in range(2))
    assert client.post("/v1/keypairs", json={"name": "deploy", "public_key": mine}).status_code == 201
    taken = client.post("/v1/keypairs", json={"name": "deploy", "public_key": theirs})
    assert taken.status_code == 409 and _error(taken) == "name_taken"
    assert taken.get_json()["error"]["details"] == {"name": "deploy"}

    assert other.get("/v1/keypairs").get_json() == {"items": []}
    for caller in (other, admin):  # an admin too: a keypair is its project's alone
        assert _error(caller.get("/v1/keypairs/deploy")) == "not_found"
        assert _error(caller.delete("/v1/keypairs/deploy")) == "not_found"
    made = other.post("/v1/keypairs", json={"name": "deploy", "public_key": theirs})
    assert made.status_code == 201
    assert client.get("/v1/keypairs/deploy").get_json()["public_key"] == mine
    assert other.get("/v1/keypairs/deploy").get_json()["public_key"] == theirs
    assert client.delete("/v1/keypairs/deploy").status_code == 204
    assert other.get("/v1/keypairs/deploy").status_code == 200
