"""Reconciliation against qemu:///system: out-of-band virsh changes are each found by the next run and
handled by their configured action; a foreign domain is never touched; two runs at once act once; a
wedged libvirtd fails a run at its deadline instead of holding it for ever."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from api import create_app
from common.config import Settings
from common.db import transaction
from common.models import Task
from common.tokens import Role
from tests.e2e.qemu import URI, import_blank_image, virsh
from tests.support.environment import TEST_BROKER
from tests.support.polling import poll
from tests.support.processes import BeatProcess, WorkerProcess, start_beat, start_worker
from tests.support.tokens import api_client, zero_usage
from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor import network_xml

HOST = "recon"
POOL = "mini-iaas-recon"
POOL_PATH = "/var/lib/mini-iaas/recon-pool"
LIBVIRTD_PID_FILE = Path("/run/libvirtd.pid")  # written by `libvirtd -d` (scripts/start-services.sh)
REPAIR = (
    "ghost_domain=reap,missing_domain=mark_error,power_drift=fix,orphan_volume=reap,orphan_network=reap,"
    "stuck_task=fail"
)


def domain_exists(ref: str) -> bool:
    return (
        subprocess.run(["virsh", "-c", URI, "dominfo", ref], capture_output=True, timeout=60).returncode == 0
    )


def settings_for(tmp: Path, database: str, actions: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database, broker_url=TEST_BROKER, libvirt_uri=URI, domain_type="qemu",
        storage_pool=POOL, storage_pool_path=POOL_PATH, console_log_dir=str(tmp), host=HOST,
        reconcile_actions=actions, sweep_interval_s=0.5, reconcile_interval_s=3600, **overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def image(database: str, sessions: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    settings = settings_for(Path("/tmp"), database, "")
    return import_blank_image(settings, sessions, "reconimg", tmp_path_factory.mktemp("img"))


class Stack:
    """The API (in process) and a real worker for host `recon`, with the given reconcile actions."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.app: Flask = create_app(settings)
        self.client: FlaskClient = api_client(self.app, role=Role.ADMIN)
        self.worker: WorkerProcess = start_worker(settings, log_dir)
        self.beat: BeatProcess = start_beat(settings, log_dir)  # its sweep re-sends what reconcile requeues

    def wait(self, location: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            task = self.client.get(location).get_json()
            return task if task["status"] in ("succeeded", "failed") else None

        return poll(done, timeout=90, interval=0.05, what=location)

    def create(self, name: str, image: str) -> str:
        response = self.client.post("/v1/vms", json={"name": name, "image": image, "vcpus": 1,
                                                     "memory_mib": 64, "disk_gib": 1})  # fmt: skip
        assert self.wait(response.headers["Location"])["status"] == "succeeded"
        return str(response.get_json()["vm"]["id"])

    def request_reconcile(self) -> str:
        response = self.client.post("/v1/actions/reconcile", json={"host": HOST})
        assert response.status_code == 202 and response.get_json()["task"]["kind"] == "reconcile"
        return str(response.headers["Location"])

    def reconcile(self) -> dict[str, Any]:
        task = self.wait(self.request_reconcile())
        assert task["status"] == "succeeded", task["error"]
        return task["result"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.beat.stop()
        self.worker.stop()
        self.app.extensions["iaas"].close()


def purge(sessions: Any) -> None:
    for name in virsh("list", "--all", "--name").split():
        if POOL_PATH in virsh("domblklist", name, "--details", check=False) or name.startswith("recon-"):
            virsh("destroy", name, check=False)
            virsh("undefine", name, check=False)
    for volume in virsh("vol-list", "--pool", POOL, check=False).split():
        if volume.startswith(("vm-", "seed-")):
            virsh("vol-delete", "--pool", POOL, volume, check=False)
    for network in virsh("net-list", "--all", "--name").split():
        if network_xml.parse_network_name(network, HOST) is not None:
            virsh("net-destroy", network, check=False)
            virsh("net-undefine", network, check=False)
    with transaction(sessions) as session:
        session.execute(text("TRUNCATE task_steps, tasks, nics, vms, idempotency_keys CASCADE"))
        zero_usage(session)


@pytest.fixture
def stacks(sessions: Any, tmp_path: Path, database: str, image: str) -> Iterator[dict[str, Stack]]:
    purge(sessions)
    made: dict[str, Stack] = {}

    def make(actions: str, **overrides: Any) -> Stack:
        made[actions] = Stack(settings_for(tmp_path, database, actions, **overrides), tmp_path)
        return made[actions]

    yield make  # type: ignore[misc]
    for stack in made.values():
        stack.close()
    purge(sessions)


def define_stray(name: str, owner_host: str | None) -> str:
    """A domain made behind our back: with our ownership tag (a ghost) or without (foreign)."""
    domain_uuid = uuid.uuid4()
    if owner_host is not None:
        spec = libvirt_xml.DomainSpec(
            domain_uuid, name, "reconimg", 1, 64, "/dev/null", f"/tmp/{name}.log", "qemu", host=owner_host
        )
        root = ET.fromstring(libvirt_xml.domain_xml(spec))  # noqa: S314 - our own XML
        devices = root.find("devices")
        assert devices is not None
        for disk in devices.findall("disk"):
            devices.remove(disk)
        root.find("name").text = name  # type: ignore[union-attr]
        xml = ET.tostring(root, encoding="unicode")
    else:
        xml = (f"<domain type='qemu'><name>{name}</name><uuid>{domain_uuid}</uuid><memory unit='MiB'>64"
               "</memory><os><type>hvm</type></os></domain>")  # fmt: skip
    path = Path(f"/tmp/{name}.xml")
    path.write_text(xml)
    virsh("define", str(path))
    virsh("start", name)
    path.unlink()
    return str(domain_uuid)


def define_stray_network(name: str) -> str:
    """A libvirt network of ours whose project network the database does not have."""
    path = Path(f"/tmp/{name}.xml")
    path.write_text(network_xml.isolated_network_xml(name))
    virsh("net-define", str(path))
    virsh("net-start", name)
    path.unlink()
    return name


def by_kind(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in result["findings"] if f["kind"] == kind]


def test_out_of_band_changes_are_found_and_repaired(stacks: Any, sessions: Any, image: str) -> None:
    stack = stacks(REPAIR)
    drifted = stack.create("drifted", image)
    vanished = stack.create("vanished", image)
    virsh("destroy", drifted)  # killed out of band: power drift
    virsh("destroy", vanished)
    virsh("undefine", vanished)  # undefined out of band: missing domain
    ghost = define_stray("recon-ghost", owner_host=HOST)
    foreign = define_stray("recon-foreign", owner_host=None)
    elsewhere = define_stray("recon-elsewhere", owner_host="another-host")  # another installation's
    orphan = f"vm-{uuid.uuid4()}.qcow2"
    virsh("vol-create-as", POOL, orphan, "1M", "--format", "qcow2")
    orphan_seed = libvirt_xml.seed_volume_name(uuid.uuid4())
    virsh("vol-create-as", POOL, orphan_seed, "64K", "--format", "raw")
    orphan_network = define_stray_network(network_xml.network_name(HOST, uuid.uuid4()))
    elsewhere_network = define_stray_network(network_xml.network_name("another-host", uuid.uuid4()))
    with transaction(sessions) as session:  # a task long past its deadline
        stuck = Task(id=uuid.uuid4(), kind="create_vm", host=HOST, status="running",
                     deadline_at=text("now() - interval '1 hour'"))  # fmt: skip
        session.add(stuck)

    result = stack.reconcile()

    assert [f["vm_id"] for f in by_kind(result, "power_drift")] == [drifted]
    assert by_kind(result, "power_drift")[0]["outcome"] == "fixed"
    assert stack.client.get(f"/v1/vms/{drifted}").get_json()["power_state"] == "shutoff"
    assert stack.client.get(f"/v1/vms/{drifted}").get_json()["status"] == "stopped"
    assert [(f["vm_id"], f["outcome"]) for f in by_kind(result, "missing_domain")] == [
        (vanished, "marked error")
    ]
    assert stack.client.get(f"/v1/vms/{vanished}").get_json()["status"] == "error"
    assert [(f["vm_id"], f["outcome"]) for f in by_kind(result, "ghost_domain")] == [(ghost, "reaped")]
    assert not domain_exists(ghost)
    assert sorted(f["domain"] for f in by_kind(result, "foreign_domain")) == [
        "recon-elsewhere",
        "recon-foreign",
    ]
    assert domain_exists(foreign) and domain_exists(elsewhere)  # never touched
    assert sorted((f["volume"], f["outcome"]) for f in by_kind(result, "orphan_volume")) == sorted(
        [(orphan, "reaped"), (orphan_seed, "reaped")]
    )
    assert orphan not in virsh("vol-list", "--pool", POOL) and orphan_seed not in virsh(
        "vol-list", "--pool", POOL
    )
    assert [(f["network"], f["outcome"]) for f in by_kind(result, "orphan_network")] == [
        (orphan_network, "reaped")
    ]
    networks = virsh("net-list", "--all", "--name").split()
    assert orphan_network not in networks and elsewhere_network in networks  # another host's: untouched
    virsh("net-destroy", elsewhere_network)
    virsh("net-undefine", elsewhere_network)
    assert [f["task_id"] for f in by_kind(result, "stuck_task")] == [str(stuck.id)]
    assert stack.wait(f"/v1/tasks/{stuck.id}")["status"] == "failed"  # re-sent by the sweep, then failed
    assert result["checked"]["vms"] == 2

    again = stack.reconcile()  # repaired: only foreign domains remain to report
    assert {f["kind"] for f in again["findings"]} == {"foreign_domain"}


def test_by_default_findings_are_only_logged(stacks: Any, image: str) -> None:
    stack = stacks("")
    drifted = stack.create("drifted", image)
    virsh("destroy", drifted)
    ghost = define_stray("recon-ghost", owner_host=HOST)

    result = stack.reconcile()

    assert {f["kind"]: f["action"] for f in result["findings"]} == {
        "power_drift": "log",
        "ghost_domain": "log",
    }
    assert stack.client.get(f"/v1/vms/{drifted}").get_json()["power_state"] == "running"  # untouched
    assert domain_exists(ghost)


def test_two_runs_at_once_act_once(stacks: Any, sessions: Any, image: str) -> None:
    stack = stacks(REPAIR)
    define_stray("recon-ghost", owner_host=HOST)
    engine = stack.app.extensions["iaas"].engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:  # another run holds it
        holder.execute(text("SELECT pg_advisory_lock(hashtext('mini-iaas:reconcile:recon'))"))
        blocked = stack.reconcile()
        holder.execute(text("SELECT pg_advisory_unlock(hashtext('mini-iaas:reconcile:recon'))"))
    assert blocked == {"host": HOST, "skipped": "another reconciliation of this host is running"}

    locations = [stack.client.post("/v1/actions/reconcile", json={"host": HOST}).headers["Location"]
                 for _ in range(2)]  # fmt: skip
    results = [stack.wait(location)["result"] for location in locations]
    reaped = [f for r in results for f in r.get("findings", []) if f.get("outcome") == "reaped"]
    assert len(reaped) == 1  # whichever ran first reaped it; the other skipped or found it gone


@contextmanager
def libvirtd_frozen() -> Iterator[None]:
    """libvirtd alive but answering nothing (SIGSTOP): the hang a deadline exists for."""
    pid = int(LIBVIRTD_PID_FILE.read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_wedged_libvirtd_fails_the_run_at_its_deadline(stacks: Any) -> None:
    stack = stacks("", task_deadline_s=10)
    stack.reconcile()  # the worker holds a working connection before libvirtd stops answering

    with libvirtd_frozen():
        task = stack.wait(stack.request_reconcile())

    assert task["status"] == "failed"
    assert task["error"]["code"] == "reconcile_timeout"
    assert f"virsh -c {URI} list --all" in task["error"]["message"]  # says what to check next

    def a_full_run() -> dict[str, Any] | None:  # the abandoned call returns and frees the host lock
        result = stack.reconcile()
        return None if "skipped" in result else result

    assert "checked" in poll(a_full_run, timeout=60, interval=0.5, what="a full run after libvirtd answers")
