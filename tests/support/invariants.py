"""The invariant every fault must keep, shared by the test-driver and the qemu tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from common.models import Network, Nic, Project, Task, Vm
from common.projects import counted_usage, usage_of
from common.states import ACTIVE_TASK_STATUSES
from tests.support.polling import poll
from worker.hypervisor import domain_xml, network_xml

# A scheduled reconcile (beat keeps running between the test's own tasks) may still be running, or
# be recovering from the worker the test killed, when the test's task finishes; it is bounded too.
SETTLE_TIMEOUT_S = 60


def owned_domains(inventory: dict[str, Any], vm_id: str) -> list[dict[str, Any]]:
    return [d for d in inventory["domains"] if d["uuid"] == vm_id or d["owner_vm_id"] == vm_id]


def owned_volumes(inventory: dict[str, Any], vm_id: str) -> list[str]:
    return [v for v in inventory["volumes"] if vm_id in v]


def host_networks(inventory: dict[str, Any], host: str) -> dict[str, str]:
    """The libvirt networks of mini-iaas host `host`, by name, with the project network's id."""
    found = {name: network_xml.parse_network_name(name, host) for name in inventory.get("networks", [])}
    return {name: str(network_id) for name, network_id in found.items() if network_id is not None}


def unfinished_tasks(sessions: Any) -> list[tuple[str, str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(Task.id, Task.kind, Task.status).where(Task.status.in_(ACTIVE_TASK_STATUSES))
        ).all()
    return [(str(task_id), str(kind), str(status)) for task_id, kind, status in rows]


def wait_for_every_task_to_finish(sessions: Any, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Every task reaches `succeeded` or `failed` within `timeout`; fails naming those that did not."""
    try:
        poll(lambda: None if unfinished_tasks(sessions) else True, timeout=timeout, what="every task")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; unfinished: {unfinished_tasks(sessions)}") from None


def assert_usage_is_counted(sessions: Any) -> None:
    """Every project's kept usage equals a count of its VMs that hold quota: no path of a task,
    a failure or a compensation took or released a share twice, or forgot to. And addresses go with
    the quota (common/ipam.py): a VM that holds none (deleted, cancelled, compensated) holds no NIC."""
    with sessions() as session:
        for project in session.scalars(select(Project)):
            kept, counted = usage_of(project), counted_usage(session, project.id)
            assert kept == counted, f"project {project.name}: usage {kept}, but its VMs add up to {counted}"
        leaked = session.execute(
            select(Vm.name, Vm.status, Nic.ip).join(Nic, Nic.vm_id == Vm.id).where(~Vm.holds_quota)
        ).all()
    assert not leaked, f"addresses held by VMs that hold no quota: {[tuple(row) for row in leaked]}"


def assert_task_times_are_causal(sessions: Any) -> None:
    """Every task's times are in the order things happen: created_at <= queued_at <= started_at <=
    finished_at, each of them that is set (a task cancelled before it started has no started_at; one
    finished at birth was never queued)."""
    times = (Task.created_at, Task.queued_at, Task.started_at, Task.finished_at)
    with sessions() as session:
        rows = session.execute(select(Task.id, Task.kind, *times)).all()
    for task_id, kind, *stamps in rows:
        known = [stamp for stamp in stamps if stamp is not None]
        assert known == sorted(known), (
            f"task {task_id} ({kind}): created, queued, started, finished at {stamps}: not in order"
        )


def assert_nothing_leaked(sessions: Any, inventory: dict[str, Any]) -> dict[str, Any]:
    """No task left unfinished, nothing in libvirt that the database does not own (domains, disks,
    seeds, the host's networks), every project's usage true, no address held for nothing, and every
    task's times in order. Returns the VMs by id."""
    wait_for_every_task_to_finish(sessions)
    assert_usage_is_counted(sessions)
    assert_task_times_are_causal(sessions)
    with sessions() as session:
        vms = {str(vm.id): vm for vm in session.scalars(select(Vm)).all()}
        networks = {str(network_id) for network_id in session.scalars(select(Network.id))}
    live = {vm_id for vm_id, vm in vms.items() if vm.status not in ("deleted",)}
    for domain in inventory["domains"]:
        owner = domain["owner_vm_id"]
        assert owner is None or owner in live, f"leaked domain {domain['name']} (VM {owner} is not live)"
    for volume in inventory["volumes"]:
        owner = domain_xml.volume_owner(volume)
        assert owner is None or owner in live, f"leaked volume {volume}"
    for name, network_id in host_networks(inventory, inventory["host"]).items():
        assert network_id in networks, f"leaked libvirt network {name} (its project network is gone)"
    return vms


def assert_hypervisor_matches_database(sessions: Any, inventory: dict[str, Any]) -> None:
    """The invariant every fault must keep: nothing leaked (above), every VM the database calls
    running has its domain and its disk, and a deleted VM has neither."""
    vms = assert_nothing_leaked(sessions, inventory)
    for vm_id, vm in vms.items():
        has_domain = bool(owned_domains(inventory, vm_id))
        has_volume = bool(owned_volumes(inventory, vm_id))
        if vm.status == "running":
            assert has_domain and has_volume, f"VM {vm.name} is running in the database only"
        if vm.status == "deleted":
            assert not has_domain and not has_volume, f"deleted VM {vm.name} left resources"
