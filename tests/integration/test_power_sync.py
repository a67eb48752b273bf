"""`lifecycle.sync_power_states` against the real test database: status follows power only for running/stopped
VMs without an active task; everything else keeps its status."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from common.db import transaction
from common.lifecycle import sync_power_states
from common.models import Task, Vm
from common.states import PowerState, TaskStatus, VmStatus
from tests.support.tokens import project_id


def add_vm(sessions: Any, status: str, power_state: str, task_status: str | None = None) -> uuid.UUID:
    vm_id = uuid.uuid4()
    with transaction(sessions) as session:
        session.add(
            Vm(id=vm_id, name=f"vm-{vm_id.hex[:8]}", image="tiny", vcpus=1, memory_mib=64, disk_gib=1,
               status=status, power_state=power_state, host="itest", project_id=project_id(sessions))
        )  # fmt: skip
        session.flush()
        if task_status is not None:
            session.add(Task(kind="reboot_vm", vm_id=vm_id, host="itest", status=task_status))
    return vm_id


def apply_power_states(sessions: Any, power_states: dict[uuid.UUID, PowerState]) -> list[uuid.UUID]:
    with transaction(sessions) as session:
        return sync_power_states(session, power_states)


def row(sessions: Any, vm_id: uuid.UUID) -> tuple[str, str]:
    with sessions() as session:
        vm = session.scalars(select(Vm).where(Vm.id == vm_id)).one()
        return vm.status, vm.power_state


def test_status_follows_power_between_running_and_stopped(sessions: Any) -> None:
    running = add_vm(sessions, VmStatus.RUNNING, PowerState.RUNNING)
    stopped = add_vm(sessions, VmStatus.STOPPED, PowerState.SHUTOFF)
    crashed = add_vm(sessions, VmStatus.RUNNING, PowerState.RUNNING)

    changed = apply_power_states(
        sessions, {running: PowerState.SHUTOFF, stopped: PowerState.RUNNING, crashed: PowerState.CRASHED}
    )

    assert sorted(changed) == sorted([running, stopped, crashed])
    assert row(sessions, running) == ("stopped", "shutoff")
    assert row(sessions, stopped) == ("running", "running")
    assert row(sessions, crashed) == ("stopped", "crashed")


def test_paused_keeps_the_status_and_records_the_power(sessions: Any) -> None:
    vm = add_vm(sessions, VmStatus.RUNNING, PowerState.RUNNING)
    assert apply_power_states(sessions, {vm: PowerState.PAUSED}) == [vm]
    assert row(sessions, vm) == ("running", "paused")


def test_a_vm_with_an_active_task_is_never_touched(sessions: Any) -> None:
    pending = add_vm(sessions, VmStatus.RUNNING, PowerState.RUNNING, task_status=TaskStatus.PENDING)
    running = add_vm(sessions, VmStatus.STOPPED, PowerState.SHUTOFF, task_status=TaskStatus.RUNNING)
    finished = add_vm(sessions, VmStatus.RUNNING, PowerState.RUNNING, task_status=TaskStatus.SUCCEEDED)

    changed = apply_power_states(
        sessions, {pending: PowerState.SHUTOFF, running: PowerState.RUNNING, finished: PowerState.SHUTOFF}
    )

    assert changed == [finished]
    assert row(sessions, pending) == ("running", "running")
    assert row(sessions, running) == ("stopped", "shutoff")
    assert row(sessions, finished) == ("stopped", "shutoff")


def test_error_deleting_pending_vms_keep_their_status(sessions: Any) -> None:
    vms = {
        status: add_vm(sessions, status, PowerState.UNKNOWN) for status in ("error", "deleting", "pending")
    }

    changed = apply_power_states(sessions, dict.fromkeys(vms.values(), PowerState.RUNNING))

    assert sorted(changed) == sorted(vms.values())
    for status, vm_id in vms.items():
        assert row(sessions, vm_id) == (status, "running")  # the power is recorded, the status kept


def test_deleted_vms_unknown_ids_and_unchanged_rows_are_left_alone(sessions: Any) -> None:
    deleted = add_vm(sessions, VmStatus.DELETED, PowerState.SHUTOFF)
    same = add_vm(sessions, VmStatus.RUNNING, PowerState.RUNNING)
    with sessions() as session:
        before = session.scalars(select(Vm.updated_at).where(Vm.id == same)).one()

    changed = apply_power_states(
        sessions, {deleted: PowerState.RUNNING, same: PowerState.RUNNING, uuid.uuid4(): PowerState.RUNNING}
    )

    assert changed == []
    assert row(sessions, deleted) == ("deleted", "shutoff")
    with sessions() as session:
        assert session.scalars(select(Vm.updated_at).where(Vm.id == same)).one() == before
    assert apply_power_states(sessions, {}) == []
