"""The repairs reconciliation may make: one function per finding kind, each acting on the findings of
its kind whose configured action is not `log`, and writing each one's outcome.

Database repairs are batched (one statement per kind) through common/lifecycle.py, and each skips a
VM or task that a task took meanwhile; libvirt repairs are one call per finding."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from common import lifecycle
from common.config import Settings
from common.db import transaction
from common.states import PowerState
from worker import guest_networks
from worker.hypervisor import domain_xml
from worker.hypervisor.connection import Hypervisor, LibvirtError
from worker.reconcile.findings import Action, Finding, FindingKind


def recheck(findings: list[Finding], hv: Hypervisor) -> None:
    """Before a database repair, ask libvirt again about that one VM: a task may have finished
    between the listing and the database read (a domain defined just after the listing is not
    missing; a start just done is not drift). One call per finding, none per healthy VM."""
    for f in findings:
        if f.action == Action.LOG or f.kind not in (FindingKind.MISSING_DOMAIN, FindingKind.POWER_DRIFT):
            continue
        if not f.vm_id:
            continue
        now = hv.power_state(uuid.UUID(f.vm_id))
        if f.kind == FindingKind.MISSING_DOMAIN and now != PowerState.UNKNOWN:
            f.action, f.outcome = Action.LOG, "skipped: the domain exists now"
        elif f.kind == FindingKind.POWER_DRIFT and now != f.detail["libvirt"]:
            f.action, f.outcome = Action.LOG, f"skipped: libvirt now says {now}"


def fix_power_drift(findings: list[Finding], ctx: RepairContext) -> None:
    drift = {uuid.UUID(f.vm_id): PowerState(f.detail["libvirt"]) for f in findings if f.vm_id}
    with transaction(ctx.sessions) as session:
        fixed = {str(vm_id) for vm_id in lifecycle.sync_power_states(session, drift)}
    for f in findings:
        f.outcome = "fixed" if f.vm_id in fixed else "skipped: the VM got a task meanwhile"


def mark_missing_error(findings: list[Finding], ctx: RepairContext) -> None:
    with transaction(ctx.sessions) as session:
        marked = lifecycle.mark_missing(session, [uuid.UUID(f.vm_id) for f in findings if f.vm_id])
    for f in findings:
        f.outcome = "marked error" if f.vm_id in marked else "skipped: the VM changed meanwhile"


def reap_ghost_domain(findings: list[Finding], ctx: RepairContext) -> None:
    for f in findings:
        if f.vm_id:
            _reap(f, ctx.reap_domain, uuid.UUID(f.vm_id))


def reap_orphan_volume(findings: list[Finding], ctx: RepairContext) -> None:
    for f in findings:
        if f.volume:
            _reap(f, ctx.delete_volume, f.volume)


def reap_orphan_network(findings: list[Finding], ctx: RepairContext) -> None:
    names = [f.network for f in findings if f.network]
    try:
        removed = set(guest_networks.remove_unused_networks(ctx.hv, ctx.sessions, names))
    except LibvirtError as exc:
        for f in findings:
            f.outcome = f"failed: {exc}"
        return
    for f in findings:
        f.outcome = "reaped" if f.network in removed else "kept: a domain on this host still uses it"


def fail_stuck_task(findings: list[Finding], ctx: RepairContext) -> None:
    with transaction(ctx.sessions) as session:
        requeued = lifecycle.fail_stuck(session, [uuid.UUID(f.task_id) for f in findings if f.task_id])
    for f in findings:
        f.outcome = "requeued to fail and compensate" if f.task_id in requeued else "finished meanwhile"


def _reap(finding: Finding, act: Callable[[Any], object], target: Any) -> None:
    try:
        act(target)
    except (LibvirtError, ValueError) as exc:
        finding.outcome = f"failed: {exc}"
    else:
        finding.outcome = "reaped"


class RepairContext:
    def __init__(self, hv: Hypervisor, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.hv = hv
        self.sessions = sessions
        self._pool = hv.pool(settings)

    def delete_volume(self, name: str) -> None:
        self.hv.delete_volume(self._pool, name)

    def reap_domain(self, vm_id: uuid.UUID) -> None:
        self.hv.undefine_domain(vm_id)
        self.delete_volume(domain_xml.vm_volume_name(vm_id))
        self.delete_volume(domain_xml.seed_volume_name(vm_id))


REPAIRS: dict[tuple[FindingKind, Action], Callable[[list[Finding], RepairContext], None]] = {
    (FindingKind.POWER_DRIFT, Action.FIX): fix_power_drift,
    (FindingKind.MISSING_DOMAIN, Action.MARK_ERROR): mark_missing_error,
    (FindingKind.GHOST_DOMAIN, Action.REAP): reap_ghost_domain,
    (FindingKind.ORPHAN_VOLUME, Action.REAP): reap_orphan_volume,
    (FindingKind.ORPHAN_NETWORK, Action.REAP): reap_orphan_network,
    (FindingKind.STUCK_TASK, Action.FAIL): fail_stuck_task,
}


def repair(
    findings: list[Finding], hv: Hypervisor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """Carry out the configured actions, kind by kind."""
    ctx = RepairContext(hv, sessions, settings)
    recheck(findings, hv)
    for (kind, action), fix in REPAIRS.items():
        chosen = [f for f in findings if f.kind == kind and f.action == action]
        if chosen:
            fix(chosen, ctx)
