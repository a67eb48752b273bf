"""A property of scope, tested with Hypothesis' stateful testing on the real app and PostgreSQL:
whatever sequence of calls two projects make, neither ever sees or changes the other's resources."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.integration.helpers import vm_body
from tests.support.tokens import api_client

NAMES = st.sampled_from(["web", "db", "cache"])
WHO = st.sampled_from([0, 1])
KEYS = st.sampled_from([None, "k1", "k2"])
ACTIONS = st.sampled_from(["start", "stop", "reboot"])


class TwoProjects(RuleBasedStateMachine):
    app: Flask  # set by the test

    vms = Bundle("vms")
    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        run = uuid.uuid4().hex[:6]
        self.clients: list[FlaskClient] = [api_client(self.app, f"prop-{run}-{i}") for i in (0, 1)]
        self.live: list[set[str]] = [set(), set()]  # what each project should see in its list
        self.answered: set[str] = set()  # create tasks seen: a keyed retry replays the first answer

    def _snapshot(self, owner: int, vm_id: str) -> Any:
        return self.clients[owner].get(f"/v1/vms/{vm_id}").get_json()

    @rule(target=vms, who=WHO, name=NAMES, key=KEYS)
    def create(self, who: int, name: str, key: str | None) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        response = self.clients[who].post("/v1/vms", json=vm_body(name), headers=headers)
        assert response.status_code in (202, 409, 422), response.get_json()
        if response.status_code != 202:
            return (who, None)
        vm_id, task_id = response.get_json()["vm"]["id"], response.get_json()["task"]["id"]
        assert response.get_json()["vm"]["project"].endswith(f"-{who}")
        if task_id not in self.answered:  # a replay may show a VM deleted since
            self.answered.add(task_id)
            self.live[who].add(vm_id)
        return (who, vm_id)

    @rule(target=tasks, who=WHO, vm=vms)
    def delete(self, who: int, vm: tuple[int, str | None]) -> Any:
        owner, vm_id = vm
        if vm_id is None:
            return (owner, None)
        if who != owner:
            before = self._snapshot(owner, vm_id)
            response = self.clients[who].delete(f"/v1/vms/{vm_id}")
            assert response.status_code == 404
            assert self._snapshot(owner, vm_id) == before
            return (owner, None)
        response = self.clients[who].delete(f"/v1/vms/{vm_id}")
        assert response.status_code in (202, 404, 409)
        if response.status_code == 202:
            self.live[owner].discard(vm_id)  # pending: cancelled and deleted at once
            return (owner, response.get_json()["task"]["id"])
        return (owner, None)

    @rule(who=WHO, vm=vms, action=ACTIONS)
    def power(self, who: int, vm: tuple[int, str | None], action: str) -> None:
        owner, vm_id = vm
        if vm_id is None:
            return
        before = self._snapshot(owner, vm_id)
        response = self.clients[who].post(f"/v1/vms/{vm_id}/{action}")
        if who != owner:
            assert response.status_code == 404
            assert self._snapshot(owner, vm_id) == before
        else:
            assert response.status_code in (404, 409)  # no worker: never running, or gone

    @rule(who=WHO, vm=vms)
    def read_vm(self, who: int, vm: tuple[int, str | None]) -> None:
        owner, vm_id = vm
        if vm_id is None:
            return
        response = self.clients[who].get(f"/v1/vms/{vm_id}")
        if who != owner or vm_id not in self.live[owner]:
            assert response.status_code == 404
        else:
            assert response.status_code == 200 and response.get_json()["id"] == vm_id

    @rule(who=WHO, task=consumes(tasks))
    def read_task(self, who: int, task: tuple[int, str | None]) -> None:
        owner, task_id = task
        if task_id is None:
            return
        response = self.clients[who].get(f"/v1/tasks/{task_id}")
        assert response.status_code == (200 if who == owner else 404)

    @invariant()
    def each_list_shows_exactly_its_own(self) -> None:
        for who in (0, 1):
            items = self.clients[who].get("/v1/vms?limit=500").get_json()["items"]
            assert {vm["id"] for vm in items} == self.live[who]
            assert all(vm["project"].endswith(f"-{who}") for vm in items)


@pytest.mark.usefixtures("idle_host")
def test_two_projects_never_see_or_change_each_others_resources(app: Flask) -> None:
    TwoProjects.app = app
    run_state_machine_as_test(
        TwoProjects,
        settings=settings(
            max_examples=50, stateful_step_count=15, deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )  # fmt: skip
