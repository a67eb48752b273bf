"""What reconciliation finds: a pure comparison of one host's libvirt listing with the database.

No I/O here, so it is cheap to test and its cost is one pass over the inputs (dict lookups)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from common.states import PowerState, VmStatus
from worker.hypervisor import domain_xml


class FindingKind(StrEnum):
    GHOST_DOMAIN = "ghost_domain"  # ours by its tag, unknown to the database
    FOREIGN_DOMAIN = "foreign_domain"  # not made by this mini-iaas host: only ever reported
    MISSING_DOMAIN = "missing_domain"  # the database has the VM, libvirt no domain
    POWER_DRIFT = "power_drift"
    ORPHAN_VOLUME = "orphan_volume"  # a VM disk or seed no VM owns
    ORPHAN_NETWORK = "orphan_network"  # this host's libvirt network for a project network that is gone
    STUCK_TASK = "stuck_task"  # active past its deadline


class Action(StrEnum):
    LOG = "log"  # the default for every kind
    REAP = "reap"
    MARK_ERROR = "mark_error"
    FIX = "fix"
    FAIL = "fail"


# The repairs each kind allows besides `log`. Foreign domains are never touched.
ALLOWED_ACTIONS: dict[FindingKind, tuple[Action, ...]] = {
    FindingKind.GHOST_DOMAIN: (Action.REAP,),
    FindingKind.FOREIGN_DOMAIN: (),
    FindingKind.MISSING_DOMAIN: (Action.MARK_ERROR,),
    FindingKind.POWER_DRIFT: (Action.FIX,),
    FindingKind.ORPHAN_VOLUME: (Action.REAP,),
    FindingKind.ORPHAN_NETWORK: (Action.REAP,),
    FindingKind.STUCK_TASK: (Action.FAIL,),
}


def parse_actions(spec: str) -> dict[FindingKind, Action]:
    actions = dict.fromkeys(ALLOWED_ACTIONS, Action.LOG)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, action = (part.strip() for part in item.partition("="))
        if kind not in ALLOWED_ACTIONS or action not in (Action.LOG, *ALLOWED_ACTIONS[FindingKind(kind)]):
            allowed = {str(k): ["log", *map(str, v)] for k, v in ALLOWED_ACTIONS.items()}
            raise ValueError(f"IAAS_RECONCILE_ACTIONS: {item!r} is not one of {allowed}")
        actions[FindingKind(kind)] = Action(action)
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
    kind: FindingKind
    action: Action
    vm_id: str | None = None
    domain: str | None = None
    volume: str | None = None
    network: str | None = None
    task_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = "logged"

    def as_dict(self) -> dict[str, Any]:
        return {
            k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(self).items() if v not in (None, {})
        }


# A database VM in these states should have a domain on its host.
EXPECTS_DOMAIN = (VmStatus.RUNNING, VmStatus.STOPPED)


def compare(
    vms: dict[str, VmView],
    domains: Iterable[DomainView],
    volumes: Iterable[str],
    stuck: Iterable[TaskView],
    is_ours: Callable[[DomainView], bool],
    actions: dict[FindingKind, Action],
    networks: Mapping[str, str] | None = None,
    known_networks: Collection[str] = (),
) -> list[Finding]:
    """One pass over each listing. `is_ours` (a libvirt call) is asked only about unknown domains.
    `networks` maps this host's libvirt networks to the project network ids they stand for;
    `known_networks` are the ids the database has."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for domain in domains:
        seen.add(domain.uuid)
        vm = vms.get(domain.uuid)
        if vm is None:
            ours = is_ours(domain)
            kind = FindingKind.GHOST_DOMAIN if ours else FindingKind.FOREIGN_DOMAIN
            found = Finding(kind, actions[kind], domain=domain.name, detail={"power": domain.power})
            found.vm_id = domain.uuid if ours else None
            findings.append(found)
        elif not vm.busy and vm.power_state != domain.power:
            drift = {"database": vm.power_state, "libvirt": domain.power}
            kind = FindingKind.POWER_DRIFT
            findings.append(Finding(kind, actions[kind], vm.id, domain.name, detail=drift))
    for vm in vms.values():
        if vm.id not in seen and not vm.busy and vm.status in EXPECTS_DOMAIN:
            kind = FindingKind.MISSING_DOMAIN
            findings.append(Finding(kind, actions[kind], vm_id=vm.id,
                                    detail={"name": vm.name, "status": vm.status}))  # fmt: skip
    for volume in volumes:
        owner = domain_xml.volume_owner(volume)
        if owner is not None and owner not in vms:
            kind = FindingKind.ORPHAN_VOLUME
            findings.append(Finding(kind, actions[kind], owner, volume=volume))
    for name, network_id in (networks or {}).items():
        if network_id not in known_networks:
            kind = FindingKind.ORPHAN_NETWORK
            findings.append(Finding(kind, actions[kind], network=name, detail={"network_id": network_id}))
    for task in stuck:
        kind = FindingKind.STUCK_TASK
        findings.append(Finding(kind, actions[kind], task_id=task.id, vm_id=task.vm_id,
                                detail={"kind": task.kind, "status": task.status,
                                        "deadline_at": task.deadline_at.isoformat()}))  # fmt: skip
    return findings
