"""SIGKILL of the worker paused at every step boundary of create and destroy, on qemu:///system, then
a fresh worker: the task resumes and finishes, and nothing exists in libvirt that the database does
not own. The hypervisor is read with virsh, not through our own code."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update

from api import create_app
from common.config import Settings
from common.db import transaction
from common.models import Failpoint, Task
from tests.e2e.qemu import URI, import_blank_image, virsh
from tests.support.environment import RECOVERY_TIMES, TAKEOVER_TIMES, TEST_BROKER
from tests.support.invariants import assert_hypervisor_matches_database, owned_domains, owned_volumes
from tests.support.polling import poll
from tests.support.processes import BeatProcess, WorkerProcess, kill, start_beat, start_worker
from tests.support.tokens import api_client, zero_usage
from worker.sagas.create import CREATE_STEPS
from worker.sagas.destroy import DESTROY_STEPS

HOST = "crash"
POOL = "mini-iaas-crash"
POOL_PATH = "/var/lib/mini-iaas/crash-pool"  # qemu's user must reach it: not under pytest's 0700 tmp
CREATE_POINTS = [f"create_vm.{s.name}{suffix}" for s in CREATE_STEPS for suffix in ("", ".done")]
DESTROY_POINTS = [f"destroy_vm.{s.name}{suffix}" for s in DESTROY_STEPS for suffix in ("", ".done")]


def virsh_inventory() -> dict[str, Any]:
    """The domains whose disks live in this test's pool (other mini-iaas stacks on the machine have
    their own), with the VM id as UUID, and every volume of the pool."""
    domains = []
    for name in virsh("list", "--all", "--name").split():
        # check=False: another stack's domain may vanish between the listing and this question
        if POOL_PATH in virsh("domblklist", name, "--details", check=False):
            uuid = virsh("domuuid", name).strip()
            domains.append({"name": name, "uuid": uuid, "active": None, "owner_vm_id": uuid})
    return {"domains": domains, "volumes": virsh("vol-list", "--pool", POOL).split()}


@pytest.fixture(scope="module")
def crash_settings(tmp_path_factory: pytest.TempPathFactory, database: str) -> Settings:
    return Settings(
        database_url=database,
        broker_url=TEST_BROKER,
        libvirt_uri=URI,
        domain_type="qemu",
        storage_pool=POOL,
        storage_pool_path=POOL_PATH,
        console_log_dir=str(tmp_path_factory.mktemp("console")),
        host=HOST,
        failpoints_table=True,
        task_lease_s=2,
        sweep_interval_s=0.5,
    )


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash-logs")


@pytest.fixture(scope="module")
def crash_image(crash_settings: Settings, sessions: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return import_blank_image(crash_settings, sessions, "crashimg", tmp_path_factory.mktemp("img"))


@pytest.fixture(scope="module")
def beat(crash_settings: Settings, log_dir: Path) -> Iterator[BeatProcess]:
    process = start_beat(crash_settings, log_dir)
    yield process
    process.stop()


def purge_pool() -> None:
    """Remove what an earlier, failed test left in this test pool, so one failure does not cascade."""
    for domain in virsh_inventory()["domains"]:
        subprocess.run(["virsh", "-c", URI, "destroy", domain["uuid"]], capture_output=True, timeout=60)
        virsh("undefine", domain["uuid"])
    for volume in virsh("vol-list", "--pool", POOL).split():
        if volume.startswith("vm-"):
            virsh("vol-delete", "--pool", POOL, volume)


@pytest.fixture
def app(crash_settings: Settings, sessions: Any, crash_image: str) -> Iterator[Flask]:
    purge_pool()
    with transaction(sessions) as session:
        session.execute(text("TRUNCATE task_steps, tasks, nics, vms, idempotency_keys, failpoints CASCADE"))
        zero_usage(session)
    app = create_app(crash_settings)
    yield app
    app.extensions["iaas"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return api_client(app)


@pytest.fixture
def workers(crash_settings: Settings, log_dir: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def wait_for_task(client: FlaskClient, location: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        task = client.get(location).get_json()
        return task if task["status"] in ("succeeded", "failed") else None

    return poll(finished, timeout=timeout, interval=0.05, what=f"task {location}")


def wait_until_paused(sessions: Any, point: str) -> None:
    def paused() -> bool | None:
        with sessions() as session:
            return True if session.scalar(select(Failpoint.hits).where(Failpoint.name == point)) else None

    poll(paused, timeout=60, what=f"the worker to pause at {point}")


def kill_at(
    point: str, act: Callable[[], str], *, sessions: Any, failpoint: Any, workers: list[WorkerProcess],
    settings: Settings, log_dir: Path, client: FlaskClient,
) -> dict[str, Any]:  # fmt: skip
    """Pause the worker at `point`, SIGKILL it there, start a fresh one; return the finished task."""
    workers.append(start_worker(settings, log_dir))
    failpoint(point, "pause")
    location = act()
    wait_until_paused(sessions, point)
    kill(workers[-1])
    failpoint(point, "off")
    started = time.monotonic()
    workers.append(start_worker(settings, log_dir, nodename=workers[-1].nodename))  # its restart
    task = wait_for_task(client, location)
    RECOVERY_TIMES.append(time.monotonic() - started)
    return task


@pytest.mark.usefixtures("beat")
@pytest.mark.parametrize("point", CREATE_POINTS)
def test_worker_killed_during_create_resumes_and_leaks_nothing(
    point: str, client: FlaskClient, sessions: Any, failpoint: Any, workers: list[WorkerProcess],
    crash_settings: Settings, log_dir: Path, crash_image: str,
) -> None:  # fmt: skip
    body = {"name": "crashy", "image": crash_image, "vcpus": 1, "memory_mib": 64, "disk_gib": 1}
    holder: dict[str, Any] = {}

    def create() -> str:
        response = client.post("/v1/vms", json=body)
        assert response.status_code == 202
        holder["vm"] = response.get_json()["vm"]
        return str(response.headers["Location"])

    task = kill_at(point, create, sessions=sessions, failpoint=failpoint, workers=workers,
                   settings=crash_settings, log_dir=log_dir, client=client)  # fmt: skip

    assert task["status"] == "succeeded", task["error"]
    assert task["attempts"] == 2  # the killed run, and the one that finished it
    vm_id = holder["vm"]["id"]
    assert client.get(f"/v1/vms/{vm_id}").get_json()["status"] == "running"
    assert virsh("domstate", vm_id).strip() == "running"
    assert_hypervisor_matches_database(sessions, virsh_inventory())

    deleted = client.delete(f"/v1/vms/{vm_id}")
    assert wait_for_task(client, deleted.headers["Location"])["status"] == "succeeded"
    inventory = virsh_inventory()
    assert owned_domains(inventory, vm_id) == [] and owned_volumes(inventory, vm_id) == []


@pytest.mark.usefixtures("beat")
@pytest.mark.parametrize("point", DESTROY_POINTS)
def test_worker_killed_during_destroy_resumes_and_leaks_nothing(
    point: str, client: FlaskClient, sessions: Any, failpoint: Any, workers: list[WorkerProcess],
    crash_settings: Settings, log_dir: Path, crash_image: str,
) -> None:  # fmt: skip
    body = {"name": "doomed", "image": crash_image, "vcpus": 1, "memory_mib": 64, "disk_gib": 1}
    workers.append(start_worker(crash_settings, log_dir))
    created = client.post("/v1/vms", json=body)
    assert wait_for_task(client, created.headers["Location"])["status"] == "succeeded"
    vm_id = created.get_json()["vm"]["id"]
    workers.pop().stop()

    def destroy() -> str:
        response = client.delete(f"/v1/vms/{vm_id}")
        assert response.status_code == 202
        return str(response.headers["Location"])

    task = kill_at(point, destroy, sessions=sessions, failpoint=failpoint, workers=workers,
                   settings=crash_settings, log_dir=log_dir, client=client)  # fmt: skip

    assert task["status"] == "succeeded", task["error"]
    assert client.get(f"/v1/vms/{vm_id}").status_code == 404
    inventory = virsh_inventory()
    assert owned_domains(inventory, vm_id) == [] and owned_volumes(inventory, vm_id) == []
    assert_hypervisor_matches_database(sessions, inventory)


@pytest.mark.usefixtures("beat")
def test_a_task_past_its_deadline_is_failed_and_compensated(
    client: FlaskClient, sessions: Any, failpoint: Any, workers: list[WorkerProcess],
    crash_settings: Settings, log_dir: Path, crash_image: str,
) -> None:  # fmt: skip
    """Stuck: its worker died after defining the domain, and by the time a worker comes back the
    task's deadline has passed. It must not go on; it must undo what the dead run did."""
    point = "create_vm.start_domain"
    workers.append(start_worker(crash_settings, log_dir))
    failpoint(point, "pause")
    response = client.post("/v1/vms", json={"name": "late", "image": crash_image, "vcpus": 1,
                                            "memory_mib": 64, "disk_gib": 1})  # fmt: skip
    vm_id = response.get_json()["vm"]["id"]
    wait_until_paused(sessions, point)
    kill(workers[-1])
    assert virsh("domstate", vm_id).strip() == "shut off"  # the dead run left a defined domain behind
    with transaction(sessions) as session:
        session.execute(
            update(Task)
            .where(Task.vm_id == vm_id)
            .values(deadline_at=func.now() - text("interval '1 second'"))
        )
    failpoint(point, "off")
    workers.append(start_worker(crash_settings, log_dir))

    task = wait_for_task(client, response.headers["Location"])

    assert task["status"] == "failed"
    assert "DeadlineExceeded" in task["error"]["details"]["cause"]
    assert task["error"]["details"]["compensated"] is True
    assert client.get(f"/v1/vms/{vm_id}").get_json()["status"] == "error"
    inventory = virsh_inventory()
    assert owned_domains(inventory, vm_id) == [] and owned_volumes(inventory, vm_id) == []
    assert_hypervisor_matches_database(sessions, inventory)


@pytest.fixture
def long_lease(crash_settings: Settings) -> Settings:
    """The default lease (30 s) and a slow sweep: a recovery in seconds can only be the takeover."""
    return crash_settings.model_copy(update={"task_lease_s": 30.0, "sweep_interval_s": 10.0})


def test_a_restarted_worker_takes_over_its_dead_incarnations_task_at_once(
    client: FlaskClient, sessions: Any, failpoint: Any, workers: list[WorkerProcess],
    long_lease: Settings, log_dir: Path, crash_image: str,
) -> None:  # fmt: skip
    """SIGKILL mid-create with a 30 s lease, then the same worker (same node name) starts again: it
    frees and re-sends its earlier incarnation's task as it starts, long before that lease runs out."""
    point = "create_vm.start_domain"
    workers.append(start_worker(long_lease, log_dir))
    failpoint(point, "pause")
    response = client.post("/v1/vms", json={"name": "phoenix", "image": crash_image, "vcpus": 1,
                                            "memory_mib": 64, "disk_gib": 1})  # fmt: skip
    wait_until_paused(sessions, point)
    kill(workers[-1])
    failpoint(point, "off")
    with sessions() as session:
        dead_lease = session.scalar(select(Task.lease_expires_at).where(Task.kind == "create_vm"))
    started = time.monotonic()
    workers.append(start_worker(long_lease, log_dir, nodename=workers[-1].nodename))

    task = wait_for_task(client, response.headers["Location"])
    TAKEOVER_TIMES.append(time.monotonic() - started)

    assert task["status"] == "succeeded", task["error"]
    assert task["attempts"] == 2
    # It finished before the dead run's lease would have let the sweep recover it.
    assert dead_lease is not None and datetime.fromisoformat(task["finished_at"]) < dead_lease
    assert "took over 1 tasks that an earlier incarnation" in workers[-1].log_path.read_text()
    assert_hypervisor_matches_database(sessions, virsh_inventory())

    vm_id = response.get_json()["vm"]["id"]
    deleted = client.delete(f"/v1/vms/{vm_id}")
    assert wait_for_task(client, deleted.headers["Location"])["status"] == "succeeded"
    assert owned_domains(virsh_inventory(), vm_id) == []
