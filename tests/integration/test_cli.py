"""The `iaas` client CLI against the live stack over real HTTP: the app behind a threaded HTTP server on
loopback, a real worker on libvirt's test driver. Commands run through click's CliRunner (stdout is no
terminal there, so --wait prints plain lines), and once as a real process of the console script."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from cli.main import main
from tests.integration.helpers import delete_every_live_vm
from tests.support.environment import ROOT
from tests.support.processes import WorkerProcess
from tests.support.ssh_keys import ed25519_key, public_line
from tests.support.tokens import token_for
from worker.sagas.create import CREATE_STEPS

Iaas = Callable[..., Result]
SIZE = ("--image", "tiny", "--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1")


@pytest.fixture
def cli_env(app: Flask, http_api: str, tmp_path: Path) -> dict[str, str]:
    """The environment a user of the test project would have; no config file (an empty config folder)."""
    token = token_for(app.extensions["iaas"].settings.database_url)
    return {"IAAS_URL": http_api, "IAAS_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "config")}


@pytest.fixture
def iaas(cli_env: dict[str, str]) -> Iaas:
    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env=env or cli_env, catch_exceptions=False)

    return run


@pytest.fixture
def cleanup(client: FlaskClient, sessions: Any, worker: WorkerProcess) -> Iterator[None]:
    """The session's worker hands the next test an empty hypervisor: the test's VMs are deleted after it."""
    yield
    delete_every_live_vm(client, sessions, worker.inventory)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_create_with_wait_shows_each_step_and_the_outcome(
    iaas: Iaas, client: FlaskClient, tmp_path: Path, cleanup: None
) -> None:
    ok(iaas("network", "create", "front", "--cidr", "198.51.100.0/24"))
    key_file = tmp_path / "id.pub"
    key_file.write_text(public_line(ed25519_key()) + "\n")
    ok(iaas("keypair", "create", "me", "--public-key-file", str(key_file)))
    user_data = tmp_path / "user-data"
    user_data.write_text("#!/bin/sh\necho hi\n")

    result = ok(iaas("vm", "create", "web-1", *SIZE, "--network", "front=198.51.100.7", "--key", "me",
                     "--user-data-file", str(user_data), "--wait"))  # fmt: skip

    lines = result.stdout.splitlines()
    assert lines[0].startswith("create_vm ") and lines[0].endswith(("pending", "running"))
    for step in CREATE_STEPS:
        assert f"  {step.name}: succeeded" in lines
    assert lines[-2].startswith("create_vm succeeded in ")
    assert lines[-1].startswith("vm web-1 ") and "running" in lines[-1] and "front=198.51.100.7" in lines[-1]
    assert "\x1b" not in result.stdout  # no terminal: plain lines, no control sequences
    vm = client.get("/v1/vms").get_json()["items"][0]
    assert (vm["key_name"], vm["addresses"][0]["ip"]) == ("me", "198.51.100.7") and vm["user_data_sha256"]


def test_list_and_show_print_the_apis_objects_unchanged(
    iaas: Iaas, client: FlaskClient, cleanup: None
) -> None:
    for name in ("a-1", "a-2"):
        ok(iaas("vm", "create", name, *SIZE, "--wait"))

    listed = json.loads(ok(iaas("vm", "list", "-o", "json")).stdout)
    assert listed == client.get("/v1/vms").get_json()["items"] and len(listed) == 2
    assert yaml.safe_load(ok(iaas("vm", "list", "-o", "yaml")).stdout) == listed
    table = ok(iaas("vm", "list")).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "STATUS", "POWER"]
    assert [line.split()[1] for line in table[1:]] == ["a-1", "a-2"]

    by_name = json.loads(ok(iaas("vm", "show", "a-2", "-o", "json")).stdout)
    assert by_name == client.get(f"/v1/vms/{listed[1]['id']}").get_json()
    assert json.loads(ok(iaas("vm", "show", listed[1]["id"], "-o", "json")).stdout)["name"] == "a-2"
    assert "status:" in ok(iaas("vm", "show", "a-1")).stdout


def test_a_vm_is_named_by_its_name_wherever_its_id_is_taken(
    iaas: Iaas, client: FlaskClient, cleanup: None
) -> None:
    accepted = json.loads(ok(iaas("vm", "create", "named", *SIZE, "-o", "json")).stdout)
    assert set(accepted) == {"vm", "task"} and accepted["vm"]["name"] == "named"
    watched = ok(iaas("task", "watch", accepted["task"]["id"]))
    assert watched.stdout.splitlines()[-1].startswith("create_vm succeeded")

    stopped = ok(iaas("vm", "stop", "named", "--force", "--wait"))
    assert "stop_vm succeeded" in stopped.stdout and ": stopped, power shutoff" in stopped.stdout
    started = json.loads(ok(iaas("vm", "start", "named", "--wait", "-o", "json")).stdout)
    assert started["task"]["status"] == "succeeded" and started["vm"]["status"] == "running"
    assert "reboot_vm succeeded" in ok(iaas("vm", "reboot", "named", "--wait")).stdout
    shown = json.loads(ok(iaas("task", "show", started["task"]["id"], "-o", "json")).stdout)
    assert shown == client.get(f"/v1/tasks/{started['task']['id']}").get_json()

    deleted = ok(iaas("vm", "delete", "named", "--wait"))
    assert "destroy_vm succeeded" in deleted.stdout
    assert deleted.stdout.splitlines()[-1] == f"vm named {accepted['vm']['id']}: deleted"
    gone = iaas("vm", "show", "named")
    assert gone.exit_code == 1 and gone.stderr.startswith("error not_found: No VM named 'named'")
    assert iaas("vm", "show", accepted["vm"]["id"]).stderr.startswith("error not_found:")


def test_a_failing_create_exits_non_zero_with_the_tasks_error(
    iaas: Iaas, failpoint: Callable[[str, str], None], cleanup: None
) -> None:
    failpoint("create_vm.define_domain", "raise")

    result = iaas("vm", "create", "victim", *SIZE, "--wait")

    assert result.exit_code == 1
    assert (
        result.stderr.startswith("error step_failed: ")
        and "failpoint create_vm.define_domain" in result.stderr
    )
    assert "  compensated: True" in result.stderr
    # The failed step is undone with the others: its line keeps the cause (how many lines come before
    # depends on how fast the worker was between two answers, so only the last state is held here).
    assert "  define_domain: undone (FailpointTriggered: failpoint create_vm.define_domain" in result.stdout
    assert result.stdout.splitlines()[-2].startswith("create_vm failed in ")
    assert result.stdout.splitlines()[-2].endswith(": step_failed")
    assert ": error," in result.stdout.splitlines()[-1]  # the VM as the failure left it

    failpoint("create_vm.define_domain", "off")
    ok(iaas("vm", "delete", "victim", "--wait"))


def test_an_idempotency_key_makes_a_repeated_create_answer_the_first_task(iaas: Iaas, cleanup: None) -> None:
    first = json.loads(
        ok(iaas("vm", "create", "once", *SIZE, "--idempotency-key", "k-1", "-o", "json")).stdout
    )
    again = json.loads(
        ok(iaas("vm", "create", "once", *SIZE, "--idempotency-key", "k-1", "-o", "json")).stdout
    )
    assert again["task"]["id"] == first["task"]["id"]
    watched = json.loads(ok(iaas("task", "watch", first["task"]["id"], "-o", "json")).stdout)
    assert watched["status"] == "succeeded"  # and the VM is built before the cleanup deletes it
    taken = iaas("vm", "create", "once", *SIZE)  # a fresh key each time: a new request, refused by name
    assert taken.exit_code == 1 and taken.stderr.splitlines() == [
        "error name_taken: A VM named 'once' already exists.", "  name: once"
    ]  # fmt: skip


def test_networks_and_keypairs(iaas: Iaas, client: FlaskClient, tmp_path: Path) -> None:
    made = ok(iaas("network", "create", "back", "--cidr", "203.0.113.0/24", "--wait"))
    assert "cidr:" in made.stdout and "203.0.113.0/24" in made.stdout
    bad = iaas("network", "create", "worse", "--cidr", "203.0.113.7/24")
    assert (
        bad.exit_code == 1 and bad.stderr.startswith("error invalid_request: ") and "  cidr: " in bad.stderr
    )
    listed = json.loads(ok(iaas("network", "list", "-o", "json")).stdout)
    assert listed == client.get("/v1/networks").get_json()["items"]
    shown = yaml.safe_load(ok(iaas("network", "show", "back", "-o", "yaml")).stdout)
    assert shown == client.get(f"/v1/networks/{listed[0]['id']}").get_json()
    assert ok(iaas("network", "list")).stdout.splitlines()[1].split()[1:3] == ["back", "203.0.113.0/24"]
    assert ok(iaas("network", "delete", "back")).stdout.strip() == "network back deleted"
    assert json.loads(ok(iaas("network", "list", "-o", "json")).stdout) == []

    key_file = tmp_path / "k.pub"
    key_file.write_text(public_line(ed25519_key()) + "\n")
    made = json.loads(
        ok(iaas("keypair", "create", "k1", "--public-key-file", str(key_file), "-o", "json")).stdout
    )
    assert made == client.get("/v1/keypairs/k1").get_json()
    assert json.loads(ok(iaas("keypair", "list", "-o", "json")).stdout) == [made]
    assert made["fingerprint"] in ok(iaas("keypair", "show", "k1")).stdout
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    refused = iaas("keypair", "create", "k2", "--public-key-file", str(junk))
    assert refused.exit_code == 1 and refused.stderr.startswith("error invalid_public_key: ")
    ok(iaas("keypair", "delete", "k1"))
    assert iaas("keypair", "show", "k1").stderr.startswith("error not_found: ")


def test_images_flavors_and_the_project(iaas: Iaas, client: FlaskClient) -> None:
    assert (
        json.loads(ok(iaas("image", "list", "-o", "json")).stdout)
        == client.get("/v1/images").get_json()["items"]
    )
    assert ok(iaas("image", "list")).stdout.splitlines()[1].split()[0] == "tiny"
    assert json.loads(ok(iaas("image", "show", "tiny", "-o", "json")).stdout)["name"] == "tiny"
    assert (
        json.loads(ok(iaas("flavor", "list", "-o", "json")).stdout)
        == client.get("/v1/flavors").get_json()["items"]
    )
    project = ok(iaas("project", "show")).stdout
    assert "name:" in project and "itest" in project and "instances" in project


def test_task_history_lists_a_vms_tasks(iaas: Iaas, client: FlaskClient, cleanup: None) -> None:
    ok(iaas("vm", "create", "hist", *SIZE, "--wait"))
    ok(iaas("vm", "stop", "hist", "--wait"))
    tasks = json.loads(ok(iaas("task", "list", "--vm", "hist", "-o", "json")).stdout)
    assert [t["kind"] for t in tasks] == ["stop_vm", "create_vm"]  # newest first, as the API answers
    stops = json.loads(ok(iaas("task", "list", "--kind", "stop_vm", "-o", "json")).stdout)
    assert [t["id"] for t in stops] == [tasks[0]["id"]]
    assert ok(iaas("task", "list", "--status", "succeeded")).stdout.splitlines()[0].split()[:3] == [
        "ID", "KIND", "STATUS"
    ]  # fmt: skip


def test_a_config_file_is_used_only_when_others_cannot_read_its_token(
    iaas: Iaas, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = Path(cli_env["XDG_CONFIG_HOME"]) / "mini-iaas" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f'url = "{cli_env["IAAS_URL"]}"\ntoken = "{cli_env["IAAS_TOKEN"]}"\n')
    only_file = {"XDG_CONFIG_HOME": cli_env["XDG_CONFIG_HOME"], "IAAS_URL": "", "IAAS_TOKEN": ""}

    path.chmod(0o644)
    refused = iaas("project", "show", env=only_file)
    assert refused.exit_code == 3 and f"chmod 600 {path}" in refused.stderr and "mode 0644" in refused.stderr

    path.chmod(0o600)
    assert "itest" in ok(iaas("project", "show", env=only_file)).stdout
    wrong = iaas("--token", "not-a-token", "project", "show", env=only_file)  # the flag wins over the file
    assert wrong.exit_code == 1 and wrong.stderr.startswith("error unauthenticated: ")


def test_no_api_at_the_address_says_what_to_do(iaas: Iaas, cli_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = iaas("vm", "list", env={**cli_env, "IAAS_URL": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 3
    assert f"cannot reach the mini-iaas API at http://127.0.0.1:{port}" in result.stderr
    assert "make status" in result.stderr and "--url" in result.stderr


def test_the_console_script_prints_plain_lines_when_stdout_is_a_pipe(
    cli_env: dict[str, str], client: FlaskClient, cleanup: None
) -> None:
    env = {**os.environ, **cli_env, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "vm", "create", f"p-{uuid.uuid4().hex[:6]}", *SIZE, "--wait"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert len(lines) == len(set(lines))  # one line per change, none repeated
    assert lines[-2].startswith("create_vm succeeded in ")
