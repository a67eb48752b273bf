"""What reconciliation finds: a pure comparison of one host's libvirt listing with the database.

No I/O here, so it is cheap to test and its cost is one pass over the inputs (dict lookups)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from common.states import PowerState, VmStatus
from worker import libvirt_xml

# The repairs each kind allows besides `log` (the default). Foreign domains are never touched.
ALLOWED_ACTIONS = {
    "ghost_domain": ("reap",),
    "foreign_domain": (),
    "missing_domain": ("mark_error",),
    "power_drift": ("fix",),
    "orphan_volume": ("reap",),
    "stuck_task": ("fail",),
}


def parse_actions(spec: str) -> dict[str, str]:
    actions = dict.fromkeys(ALLOWED_ACTIONS, "log")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, action = item.partition("=")
        kind, action = kind.strip(), action.strip()
        if kind not in ALLOWED_ACTIONS or action not in ("log", *ALLOWED_ACTIONS[kind]):
            allowed = {k: ["log", *v] for k, v in ALLOWED_ACTIONS.items()}
            raise ValueError(f"IAAS_RECONCILE_ACTIONS: {item!r} is not one of {allowed}")
        actions[kind] = action
    return actions


@dataclass(frozen=True)
class DomainView:
    uuid: str
    name: str
    power: PowerState


@dataclass(frozen=True)
class VmView:
    id: str
    name: str
    status: str
    power_state: str
    busy: bool  # has a pending or running task: it belongs to that task, reconciliation keeps off


@dataclass(frozen=True)
class TaskView:
    id: str
    kind: str
    status: str
    vm_id: str | None
    deadline_at: datetime


@dataclass
class Finding:
    kind: str
    action: str
    vm_id: str | None = None
    domain: str | None = None
    volume: str | None = None
    task_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = "logged"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}


# A database VM in these states should have a domain on its host.
EXPECTS_DOMAIN = (VmStatus.RUNNING, VmStatus.STOPPED)


def compare(
    vms: dict[str, VmView],
    domains: Iterable[DomainView],
    volumes: Iterable[str],
    stuck: Iterable[TaskView],
    is_ours: Callable[[DomainView], bool],
    actions: dict[str, str],
) -> list[Finding]:
    """One pass over each listing. `is_ours` (a libvirt call) is asked only about unknown domains."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for domain in domains:
        seen.add(domain.uuid)
        vm = vms.get(domain.uuid)
        if vm is None:
            ours = is_ours(domain)
            kind = "ghost_domain" if ours else "foreign_domain"
            found = Finding(kind, actions[kind], domain=domain.name, detail={"power": domain.power})
            found.vm_id = domain.uuid if ours else None
            findings.append(found)
        elif not vm.busy and vm.power_state != domain.power:
            drift = {"database": vm.power_state, "libvirt": domain.power}
            findings.append(Finding("power_drift", actions["power_drift"], vm.id, domain.name, detail=drift))
    for vm in vms.values():
        if vm.id not in seen and not vm.busy and vm.status in EXPECTS_DOMAIN:
            findings.append(Finding("missing_domain", actions["missing_domain"], vm_id=vm.id,
                                    detail={"name": vm.name, "status": vm.status}))  # fmt: skip
    prefix, suffix = libvirt_xml.VM_VOLUME_PREFIX, ".qcow2"
    for volume in volumes:
        if volume.startswith(prefix) and volume.endswith(suffix):
            owner = volume[len(prefix) : -len(suffix)]
            if owner not in vms:
                findings.append(Finding("orphan_volume", actions["orphan_volume"], owner, volume=volume))
    for task in stuck:
        findings.append(Finding("stuck_task", actions["stuck_task"], task_id=task.id, vm_id=task.vm_id,
                                detail={"kind": task.kind, "status": task.status,
                                        "deadline_at": task.deadline_at.isoformat()}))  # fmt: skip
    return findings
