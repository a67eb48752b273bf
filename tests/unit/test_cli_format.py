"""The `iaas` CLI's pure parts: tables, the lines --wait prints, error messages, the create body, the
config file's rules, and the waiting loop against a server that long-polls, ignores `wait` or refuses it."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from cli import config, output
from cli.client import ApiError
from cli.context import describe_error
from cli.main import main
from cli.progress import PlainProgress, render_task
from cli.vms import create_body, parse_network
from cli.waiting import TaskWaiter, changes, outcome

T0 = "2025-01-02T03:04:05.000000+00:00"
T1 = "2025-01-02T03:04:07.500000+00:00"


def task(status: str = "running", steps: list[tuple[str, str]] = (), **extra: Any) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "id": "7d3c9b1e-0000-4000-8000-000000000001", "kind": "create_vm", "status": status, "attempts": 1,
        "steps": [{"name": n, "status": s, "error": None, "undo_error": None, "started_at": T0,
                   "finished_at": None if s == "running" else T1} for n, s in steps],
        "error": None, "created_at": T0, "started_at": T0, "finished_at": None, **extra,
    }  # fmt: skip


def test_a_table_aligns_its_columns_and_shows_a_missing_value_as_a_dash() -> None:
    rows = [{"name": "web-1", "n": 2}, {"name": "a", "n": None}]
    text = output.table(rows, [("name", lambda r: r["name"]), ("n", lambda r: r["n"])])
    assert text.splitlines() == ["NAME   N", "web-1  2", "a      -"]


def test_a_vm_row_shows_its_addresses_as_network_equals_ip() -> None:
    nics = [{"network": "a", "ip": "198.51.100.1"}, {"network": "b", "ip": "203.0.113.9"}]
    vm = {"id": "i", "name": "web", "status": "running", "power_state": "running", "image": "tiny",
          "vcpus": 1, "memory_mib": 128, "disk_gib": 1, "addresses": nics}  # fmt: skip
    assert output.table([vm], output.VM_COLUMNS).splitlines()[1].split() == [
        "i", "web", "running", "running", "tiny", "1", "128", "1", "a=198.51.100.1,b=203.0.113.9",
    ]  # fmt: skip


def test_json_and_yaml_print_the_objects_unchanged() -> None:
    items = [{"id": "x", "addresses": [], "key_name": None, "vcpus": 2}]
    assert json.loads(output.dump(items, "json")) == items
    assert yaml.safe_load(output.dump(items, "yaml")) == items


def test_the_first_view_of_a_task_names_it_and_each_later_change_is_one_line() -> None:
    first = task("pending")
    assert changes(None, first) == [f"create_vm {first['id']}: pending"]
    claimed = task("running", [("claim_vm", "running")])
    assert changes(first, claimed) == ["create_vm: running", "  claim_vm: running"]
    later = task("running", [("claim_vm", "succeeded"), ("create_volume", "running")])
    assert changes(claimed, later) == ["  claim_vm: succeeded", "  create_volume: running"]
    assert changes(later, later) == []


def test_a_failed_step_and_its_undo_say_why() -> None:
    failing = task("running", [("claim_vm", "succeeded"), ("define_domain", "failed")])
    failing["steps"][1]["error"] = "failpoint triggered"
    assert changes(None, failing)[-1] == "  define_domain: failed (failpoint triggered)"
    undone = task("failed", [("claim_vm", "undone")])
    assert changes(task("running", [("claim_vm", "succeeded")]), undone) == ["  claim_vm: undone"]


def test_a_takeover_by_another_worker_is_shown() -> None:
    assert "create_vm: attempt 2" in changes(task(), task(attempts=2))[0]


def test_the_outcome_line_gives_the_duration_and_the_error_code() -> None:
    assert outcome(task("succeeded", finished_at=T1)) == "create_vm succeeded in 2.5 s"
    failed = task("failed", finished_at=T1, error={"code": "step_failed", "message": "m", "details": {}})
    assert outcome(failed) == "create_vm failed in 2.5 s: step_failed"


def test_plain_progress_prints_only_what_changed() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream)
    for seen in (task("pending"), task("pending"), task("running", [("claim_vm", "running")])):
        progress.update(seen)
    assert stream.getvalue().splitlines()[1:] == ["create_vm: running", "  claim_vm: running"]
    assert "\x1b" not in stream.getvalue()


def test_the_live_view_shows_every_step_and_its_status() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    console.print(render_task(task("running", [("claim_vm", "succeeded"), ("create_volume", "running")]), {}))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "claim_vm" in text and "create_volume" in text and "✓" in text


def test_an_api_error_reads_code_then_message_then_the_fields() -> None:
    text = describe_error(
        "invalid_request", "Bad input.", {"fields": [{"field": "cidr", "message": "no /8"}]}
    )
    assert text.splitlines() == ["error invalid_request: Bad input.", "  cidr: no /8"]
    assert describe_error("vm_busy", "Busy.", {"task_id": "t"}).splitlines()[1] == "  task_id: t"


def test_the_create_body_holds_only_what_was_given() -> None:
    assert create_body("a", "tiny", flavor="small") == {"name": "a", "image": "tiny", "flavor": "small"}
    body = create_body("a", "tiny", vcpus=1, memory_mib=128, disk_gib=1, networks=["n1", "n2=198.51.100.7"],
                       key="k", user_data="#!/bin/sh\n")  # fmt: skip
    assert body["networks"] == ["n1", {"network": "n2", "ip": "198.51.100.7"}]
    assert (body["key_name"], body["user_data"], body["vcpus"]) == ("k", "#!/bin/sh\n", 1)


@pytest.mark.parametrize("bad", ["", "=198.51.100.7", "net="])
def test_a_network_option_is_name_or_name_equals_ip(bad: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_network(bad)


def write_config(tmp_path: Path, text: str, mode: int) -> dict[str, str]:
    path = tmp_path / "mini-iaas" / "config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    env = write_config(tmp_path, 'url = "http://file:1"\ntoken = "from-file"\n', 0o600)
    assert config.load(env) == config.Config("http://file:1", "from-file", str(config.config_path(env)))
    env |= {"IAAS_URL": "http://env:2/", "IAAS_TOKEN": "from-env"}
    from_env = config.load(env)
    assert (from_env.url, from_env.token, from_env.source) == ("http://env:2", "from-env", "IAAS_TOKEN")
    flagged = config.load(env, url="http://flag:3", token="from-flag")
    assert (flagged.url, flagged.token) == ("http://flag:3", "from-flag")
    assert config.load({"XDG_CONFIG_HOME": str(tmp_path / "none")}).url == config.DEFAULT_URL


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_config_file_with_a_token_that_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    env = write_config(tmp_path, 'token = "secret"\n', mode)
    with pytest.raises(config.ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        config.load(env)


def test_a_config_file_without_a_token_may_be_readable_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    assert config.load(write_config(tmp_path, 'url = "http://x:1"\n', 0o644)).url == "http://x:1"
    with pytest.raises(config.ConfigError, match="unknown keys"):
        config.load(write_config(tmp_path, 'tokn = "x"\n', 0o600))


def test_the_cli_says_what_is_wrong_with_the_config_and_exits_3(tmp_path: Path) -> None:
    env = {**write_config(tmp_path, 'token = "secret"\n', 0o644), "IAAS_TOKEN": "", "IAAS_URL": ""}
    result = CliRunner().invoke(main, ["vm", "list"], env=env)
    assert result.exit_code == 3 and "chmod 600" in result.output


def test_without_a_token_the_cli_says_where_to_put_one(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "IAAS_TOKEN": "", "IAAS_URL": ""}
    result = CliRunner().invoke(main, ["vm", "list"], env=env)
    assert result.exit_code == 3 and "no API token" in result.output and "IAAS_TOKEN" in result.output


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeServer:
    """GET /v1/tasks/<id>: answers from a script of tasks, one per ask; `refuse_wait` answers 400 to an
    ask with `wait`, as a server whose query schema does not know it would."""

    def __init__(self, script: list[dict[str, Any]], refuse_wait: bool = False):
        self.script, self.refuse_wait, self.asks = script, refuse_wait, []  # type: ignore[var-annotated]

    def request(self, method: str, path: str, *, params: Any = None, timeout: float = 0) -> Any:
        self.asks.append(params)
        if self.refuse_wait and params and "wait" in params:
            raise ApiError(400, "invalid_request", "unknown parameter wait")
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return type("Answer", (), {"json": lambda _self: answer})()

    def get(self, path: str) -> Any:
        return self.request("GET", path).json()


def test_a_server_that_ignores_wait_is_polled_at_the_interval_not_hammered() -> None:
    clock = FakeClock()
    script = [task("pending"), task("pending"), task("running"), task("running"), task("succeeded")]
    server = FakeServer(script)
    seen: list[str] = []
    waiter = TaskWaiter(server, interval=0.5, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    final = waiter.follow(task("pending"), lambda t: seen.append(t["status"]))
    assert final["status"] == "succeeded" and seen == ["pending", "running", "succeeded"]
    assert clock.slept == [0.5, 0.5, 0.5]  # after each unchanged answer (3 of 5), never after a change
    assert all(ask == {"wait": 25} for ask in server.asks)


def test_a_server_that_refuses_wait_is_asked_without_it() -> None:
    clock = FakeClock()
    server = FakeServer([task("succeeded")], refuse_wait=True)
    waiter = TaskWaiter(server, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert waiter.follow(task("pending"), lambda t: None)["status"] == "succeeded"
    assert server.asks == [{"wait": 25}, None]


def test_waiting_gives_up_at_the_timeout() -> None:
    from cli.waiting import WaitTimeout

    clock = FakeClock()
    waiter = TaskWaiter(FakeServer([task("running")]), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    with pytest.raises(WaitTimeout, match="still running after 2 s"):
        waiter.follow(task("running"), lambda t: None, timeout=2)
    assert clock.now == pytest.approx(2)


def test_no_file_mode_checks_on_a_missing_file(tmp_path: Path) -> None:
    assert config.read_file(tmp_path / "absent.toml") == {}
    assert os.path.exists(tmp_path)


class ListingClient:
    """Client.pages over a fixed list of VMs, filtered by name as the API does."""

    def __init__(self, vms: list[dict[str, str]]):
        self.vms = vms

    def pages(self, path: str, **params: Any) -> Any:
        return iter([vm for vm in self.vms if vm["name"] == params["name"]])


def test_a_vm_name_resolves_to_its_id_and_none_or_several_is_an_error() -> None:
    from cli.vm_refs import resolve_vm

    vm_id = "7d3c9b1e-0000-4000-8000-00000000000a"
    client: Any = ListingClient(
        [{"name": "web", "id": vm_id}, {"name": "twin", "id": "a"}, {"name": "twin", "id": "b"}]
    )
    assert resolve_vm(client, "web") == vm_id
    assert resolve_vm(client, vm_id.upper()) == vm_id  # an id is taken as it is, no listing
    with pytest.raises(ApiError) as missing:
        resolve_vm(client, "nope")
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    with pytest.raises(ApiError) as ambiguous:
        resolve_vm(client, "twin")
    assert ambiguous.value.code == "ambiguous_name" and ambiguous.value.details == {"ids": "a, b"}


def test_the_cli_is_a_client_of_the_rest_api_only() -> None:
    """It runs wherever the API is reachable: it imports nothing of the API, the worker or common/."""
    import ast

    root = Path(__file__).resolve().parents[2] / "cli"
    imported = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
    assert not imported & {"api", "worker", "common", "libvirt", "sqlalchemy", "celery"}
