"""A stateful property test: hypothesis interleaves creates, deletes, injected step failures and
worker kills (SIGKILL while paused inside a saga, then a fresh worker) against libvirt's test
driver, and after every step checks that the database and the hypervisor agree.

The test driver lives inside the worker process, so a killed worker takes its hypervisor state with
it -- as a host that lost its domains would. The model remembers which VMs were on the wiped
hypervisor: for those only "nothing leaked" can hold (reconciliation is what repairs the records);
for every other VM the database must match libvirt exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import delete, select, text

from api import create_app
from common.config import Settings
from common.db import transaction
from common.models import Failpoint, Vm
from tests.integration.helpers import (
    owned_domains,
    owned_volumes,
    vm_body,
)
from tests.integration.helpers import wait_for_task as wait
from tests.support.environment import INJECTED
from tests.support.invariants import assert_nothing_leaked
from tests.support.polling import poll
from tests.support.processes import WorkerProcess, kill, start_beat, start_worker
from tests.support.testdriver import driver_settings, tiny_image
from tests.support.tokens import api_client, zero_usage
from worker.sagas.create import CREATE_STEPS

HOST = "itest-model"
NAMES = ["alpha", "beta", "gamma"]
FAIL_POINTS = [f"create_vm.{s.name}" for s in CREATE_STEPS] + [
    f"create_vm.{s.name}.done" for s in CREATE_STEPS
]
PAUSE_POINTS = FAIL_POINTS


@dataclass
class Environment:
    settings: Settings
    sessions: Any
    log_dir: Path
    worker: WorkerProcess | None = None
    kills: int = 0
    faults: int = 0
    client: FlaskClient | None = None
    stats: dict[str, int] = field(default_factory=dict)


ENV: Environment | None = None


class VmLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert ENV is not None
        self.env = ENV
        with transaction(self.env.sessions) as session:
            session.execute(text("TRUNCATE task_steps, tasks, nics, vms, idempotency_keys CASCADE"))
            zero_usage(session)
            session.execute(delete(Failpoint))
        self.restart_worker()  # a fresh, empty hypervisor for every example
        self.live: dict[str, str] = {}  # name -> VM id, per the model
        self.wiped: set[str] = set()  # VM ids whose domains went down with a killed worker

    # --- helpers ------------------------------------------------------------------------------

    @property
    def client(self) -> FlaskClient:
        assert self.env.client is not None
        return self.env.client

    def restart_worker(self) -> None:
        if self.env.worker is not None:
            self.env.worker.stop()
        self.env.worker = start_worker(self.env.settings, self.env.log_dir)

    def set_point(self, name: str, action: str | None) -> None:
        with transaction(self.env.sessions) as session:
            session.execute(delete(Failpoint).where(Failpoint.name == name))
            if action:
                INJECTED[f"failpoint {action}s"] += 1
                session.add(Failpoint(name=name, action=action, hits=0))

    def post(self, name: str) -> Any:
        response = self.client.post("/v1/vms", json=vm_body(name, image="tiny-model"))
        if name in self.live:
            assert response.status_code == 409 and response.get_json()["error"]["code"] == "name_taken"
            return None
        assert response.status_code == 202, response.get_json()
        return response

    def settle_create(self, name: str, response: Any) -> None:
        task = wait(self.client, response.headers["Location"], timeout=60)
        vm_id = response.get_json()["vm"]["id"]
        status = self.client.get(f"/v1/vms/{vm_id}").get_json()["status"]
        assert (task["status"], status) in {("succeeded", "running"), ("failed", "error")}, (task, status)
        self.live[name] = vm_id

    # --- rules --------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def create(self, name: str) -> None:
        response = self.post(name)
        if response is not None:
            self.settle_create(name, response)

    @rule(name=st.sampled_from(NAMES), point=st.sampled_from(FAIL_POINTS))
    def create_with_a_failing_step(self, name: str, point: str) -> None:
        self.set_point(point, "raise")
        try:
            response = self.post(name)
            if response is not None:
                self.env.faults += 1
                self.settle_create(name, response)
                assert self.client.get(response.headers["Location"]).get_json()["status"] == "failed"
        finally:
            self.set_point(point, None)

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        vm_id = self.live.get(name)
        if vm_id is None:
            return
        response = self.client.delete(f"/v1/vms/{vm_id}")
        assert response.status_code == 202, response.get_json()
        task = wait(self.client, response.headers["Location"], timeout=60)
        assert task["status"] == "succeeded", task["error"]  # a missing domain or volume is success
        assert self.client.get(f"/v1/vms/{vm_id}").status_code == 404
        del self.live[name]
        self.wiped.discard(vm_id)

    @rule(name=st.sampled_from(NAMES), point=st.sampled_from(PAUSE_POINTS))
    def kill_the_worker_inside_a_create(self, name: str, point: str) -> None:
        if name in self.live:
            return
        self.set_point(point, "pause")
        response = self.post(name)
        assert response is not None

        def paused() -> bool | None:
            with self.env.sessions() as session:
                return True if session.scalar(select(Failpoint.hits).where(Failpoint.name == point)) else None

        poll(paused, timeout=30, what=f"pause at {point}")
        assert self.env.worker is not None
        kill(self.env.worker)
        self.env.kills += 1
        self.wiped |= set(self.live.values())  # the test driver died with the worker
        self.set_point(point, None)
        self.env.worker = start_worker(self.env.settings, self.env.log_dir)
        # The lease runs out, beat's sweep re-queues, the fresh worker resumes on an empty hypervisor.
        task = wait(self.client, response.headers["Location"], timeout=60)
        assert task["status"] in ("succeeded", "failed")
        # Whatever the resumed run did, the first run's part of this VM died with the test driver.
        self.live[name] = response.get_json()["vm"]["id"]
        self.wiped.add(self.live[name])

    # --- the invariant ------------------------------------------------------------------------

    @invariant()
    def database_and_hypervisor_agree(self) -> None:
        assert self.env.worker is not None
        inventory = self.env.worker.inventory()
        with self.env.sessions() as session:
            vms = {str(vm.id): vm.status for vm in session.scalars(select(Vm)).all()}
        assert_nothing_leaked(self.env.sessions, inventory)
        for name, vm_id in self.live.items():
            status = vms[vm_id]
            present = bool(owned_domains(inventory, vm_id)) and bool(owned_volumes(inventory, vm_id))
            if vm_id in self.wiped:
                continue  # its hypervisor state died with a worker: only "nothing leaked" holds (above)
            if status == "running":
                assert present, f"{name} is running in the database only"
            else:
                assert status == "error" and not present, f"{name}: {status} but present={present}"

    def teardown(self) -> None:
        self.set_point("*", None)


def test_database_and_hypervisor_agree_under_random_faults(
    sessions: Any, run_dir: Path, broker: Any, tmp_path: Path
) -> None:
    global ENV
    model_settings = driver_settings(run_dir, HOST, task_lease_s=1, sweep_interval_s=0.5, outbox_grace_s=0)
    with transaction(sessions) as session:
        session.execute(
            text("TRUNCATE task_steps, tasks, nics, vms, images CASCADE")
        )  # no foreign key from vms
        zero_usage(session)
        session.add(tiny_image(HOST, name="tiny-model"))
    app = create_app(model_settings)
    ENV = Environment(model_settings, sessions, tmp_path, client=api_client(app))
    beat = start_beat(model_settings, tmp_path)
    try:
        run_state_machine_as_test(
            VmLifecycle,
            settings=settings(
                max_examples=10, stateful_step_count=12, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck), database=None,
            ),
        )  # fmt: skip
    finally:
        beat.stop()
        if ENV.worker is not None:
            ENV.worker.stop()
        print(f"\nstate machine: {ENV.faults} injected step failures, {ENV.kills} worker kills")
        app.extensions["iaas"].close()
        ENV = None
