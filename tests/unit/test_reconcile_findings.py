"""The reconciliation comparison, on plain data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from common.states import PowerState
from worker.hypervisor import domain_xml as libvirt_xml
from worker.reconcile.findings import DomainView, TaskView, VmView, compare, parse_actions

A, B, C, D, E = (str(uuid.uuid4()) for _ in range(5))
LOG = parse_actions("")


def vm(vm_id: str, status: str = "running", power: str = "running", busy: bool = False) -> VmView:
    return VmView(vm_id, f"vm-{vm_id[:4]}", status, power, busy)


def dom(vm_id: str, power: PowerState = PowerState.RUNNING) -> DomainView:
    return DomainView(vm_id, f"iaas-{vm_id[:8]}", power)


def kinds(findings: list) -> list[tuple[str, str | None]]:  # type: ignore[type-arg]
    return sorted((f.kind, f.vm_id or f.domain) for f in findings)


def test_everything_in_agreement_finds_nothing() -> None:
    vms = {A: vm(A), B: vm(B, "stopped", "shutoff")}
    domains = [dom(A), dom(B, PowerState.SHUTOFF)]
    volumes = [f"vm-{A}.qcow2", f"vm-{B}.qcow2", "image-tiny.qcow2"]
    assert compare(vms, domains, volumes, [], lambda d: True, LOG) == []


def test_each_kind_of_finding() -> None:
    vms = {A: vm(A), B: vm(B), C: vm(C, "error", "unknown")}
    ours, foreign = dom(D), DomainView(E, "someone-elses", PowerState.RUNNING)
    stuck = TaskView(str(uuid.uuid4()), "create_vm", "running", C, datetime(2026, 1, 1, tzinfo=UTC))
    findings = compare(
        vms,
        [dom(A, PowerState.SHUTOFF), ours, foreign],
        [f"vm-{A}.qcow2", f"vm-{D}.qcow2", f"vm-{C}.qcow2"],
        [stuck],
        lambda d: d.uuid == D,
        parse_actions("ghost_domain=reap,power_drift=fix"),
    )
    assert kinds(findings) == sorted([
        ("power_drift", A), ("missing_domain", B), ("ghost_domain", D), ("foreign_domain", "someone-elses"),
        ("orphan_volume", D), ("stuck_task", C),
    ])  # fmt: skip
    by_kind = {f.kind: f for f in findings}
    assert by_kind["power_drift"].detail == {"database": "running", "libvirt": PowerState.SHUTOFF}
    assert by_kind["power_drift"].action == "fix" and by_kind["ghost_domain"].action == "reap"
    assert by_kind["missing_domain"].action == "log" and by_kind["foreign_domain"].action == "log"
    assert by_kind["foreign_domain"].vm_id is None  # never named as one of ours


def test_vms_with_an_active_task_are_skipped() -> None:
    vms = {A: vm(A, busy=True), B: vm(B, busy=True)}
    assert compare(vms, [dom(A, PowerState.SHUTOFF)], [], [], lambda d: True, LOG) == []


def test_error_and_pending_vms_without_a_domain_are_not_missing() -> None:
    vms = {A: vm(A, "error", "unknown"), B: vm(B, "pending", "unknown"), C: vm(C, "deleting", "running")}
    assert compare(vms, [], [], [], lambda d: True, LOG) == []


def test_ownership_is_only_asked_for_unknown_domains() -> None:
    asked: list[str] = []
    compare({A: vm(A)}, [dom(A), dom(B)], [], [], lambda d: bool(asked.append(d.uuid)), LOG)
    assert asked == [B]


@pytest.mark.parametrize(
    "spec", ["foreign_domain=reap", "ghost_domain=fix", "nonsense=log", "power_drift=reap"]
)
def test_actions_are_checked(spec: str) -> None:
    with pytest.raises(ValueError, match="IAAS_RECONCILE_ACTIONS"):
        parse_actions(spec)


def test_ownership_tag_is_scoped_to_a_host() -> None:
    spec = libvirt_xml.DomainSpec(uuid.UUID(A), "n", "tiny", 1, 64, "/p", "/c", "qemu", host="node-1")
    xml = libvirt_xml.domain_xml(spec)
    assert libvirt_xml.owner_vm_id(xml) == uuid.UUID(A)
    assert libvirt_xml.owner_vm_id(xml, "node-1") == uuid.UUID(A)
    assert libvirt_xml.owner_vm_id(xml, "node-2") is None


def test_an_orphan_seed_is_found_like_an_orphan_disk() -> None:
    findings = compare({A: vm(A)}, [dom(A)], [f"seed-{A}.iso", f"seed-{D}.iso", "seed-notes.txt"], [],
                       lambda d: True, LOG)  # fmt: skip
    assert [(f.kind, f.vm_id, f.volume) for f in findings] == [("orphan_volume", D, f"seed-{D}.iso")]


def test_a_libvirt_network_whose_project_network_is_gone_is_an_orphan() -> None:
    kept, gone = str(uuid.uuid4()), str(uuid.uuid4())
    networks = {f"iaas-net-{kept}-h1": kept, f"iaas-net-{gone}-h1": gone}
    findings = compare({}, [], [], [], lambda d: True, parse_actions("orphan_network=reap"), networks, {kept})
    assert [(f.kind, f.network, f.action, f.detail) for f in findings] == [
        ("orphan_network", f"iaas-net-{gone}-h1", "reap", {"network_id": gone})
    ]
