"""`iaas-admin project …` and `token …` as an operator runs them (a real process on the test
database), checked through the API they govern."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from api import create_app
from common.config import Settings
from tests.support.processes import iaas_admin


@pytest.fixture
def admin_cli(settings: Settings, database: str) -> Any:
    return iaas_admin(settings)


@pytest.fixture
def api(settings: Settings, database: str) -> Any:
    app: Flask = create_app(settings.model_copy(update={"token_cache_s": 0}))
    yield app.test_client()
    app.extensions["iaas"].close()


def test_an_operator_makes_a_project_and_a_token_that_the_api_accepts(admin_cli: Any, api: Any) -> None:
    name = f"acme-{uuid.uuid4().hex[:6]}"
    made = admin_cli("project", "create", name, "--max-instances", "2", "--max-vcpus", "8")
    assert made.returncode == 0, made.stderr
    assert "instances 2" in made.stdout and "vcpus 8" in made.stdout
    again = admin_cli("project", "create", name)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert admin_cli("project", "create", name, "--exist-ok").returncode == 0

    token = admin_cli("token", "create", "--project", name, "--name", "ci", "--expires-in", "1h")
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip().splitlines()[-1]  # the secret, alone on the last line
    assert secret.startswith("iaas_") and len(secret) > 40
    headers = {"Authorization": f"Bearer {secret}"}
    project = api.get("/v1/project", headers=headers).get_json()
    assert project["name"] == name and project["limits"]["instances"] == 2
    assert project["token"]["name"] == "ci" and project["token"]["role"] == "member"

    listing = admin_cli("token", "list")
    assert secret not in listing.stdout  # only a hash is kept
    token_id = project["token"]["id"]
    assert any(token_id in line and name in line and "active" in line for line in listing.stdout.splitlines())
    assert name in admin_cli("project", "list").stdout

    assert admin_cli("project", "set-limits", name, "--max-instances", "5").returncode == 0
    assert api.get("/v1/project", headers=headers).get_json()["limits"]["instances"] == 5

    revoked = admin_cli("token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert api.get("/v1/project", headers=headers).status_code == 401
    assert "revoked" in admin_cli("token", "list").stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["project", "create", "Not_A_Label"], "lowercase DNS label"),
        (["project", "create", "x", "--max-vcpus", "-1"], "-1"),
        (["token", "create", "--project", "no-such-project"], "no project named no-such-project"),
        (["token", "create", "--project", "itest", "--expires-in", "soon"], "not a duration"),
        (["token", "create", "--project", "itest", "--role", "root"], "root"),
        (["token", "revoke", str(uuid.uuid4())], "no token with id"),
        (["token", "revoke", "not-a-uuid"], "not-a-uuid"),
        (["project", "set-limits", "itest"], "name at least one limit"),
    ],
)
def test_bad_admin_input_is_refused_with_a_message(admin_cli: Any, args: list[str], message: str) -> None:
    done = admin_cli(*args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_bootstrap_leaves_one_valid_admin_token_in_a_private_file(
    admin_cli: Any, api: Any, tmp_path: Path
) -> None:
    path = tmp_path / "secrets" / "admin-token"
    first = admin_cli("bootstrap", "--token-file", str(path), "--project", "boot-admin")
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    secret = path.read_text().strip()
    shown = api.get("/v1/project", headers={"Authorization": f"Bearer {secret}"}).get_json()
    assert shown["name"] == "boot-admin" and shown["token"]["role"] == "admin"

    second = admin_cli("bootstrap", "--token-file", str(path), "--project", "boot-admin")
    assert second.returncode == 0 and "is valid" in second.stdout
    assert path.read_text().strip() == secret  # kept while it works

    admin_cli("token", "revoke", shown["token"]["id"])
    third = admin_cli("bootstrap", "--token-file", str(path), "--project", "boot-admin")
    assert third.returncode == 0 and path.read_text().strip() != secret  # replaced once it stopped working
