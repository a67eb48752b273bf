"""Reconciliation of one host: libvirt's listing against the database, and the configured repairs.

Cost per run: one getAllDomainStats, one pool listing, two database queries, and batched writes;
a libvirt call per domain only for domains the database does not know (to read their ownership tag)
and per repair. Runs of the same host exclude each other through a PostgreSQL advisory lock."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import libvirt
from sqlalchemy import Engine, exists, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import transaction
from common.models import Task, Vm
from common.states import ACTIVE_TASK_STATUSES, PowerState, TaskKind, TaskStatus, VmStatus
from worker import libvirt_xml
from worker.hypervisor import Hypervisor, power_state_of
from worker.power_sync import apply_power_states
from worker.reconcile_findings import DomainView, Finding, TaskView, VmView, compare, parse_actions

log = logging.getLogger(__name__)

MAX_LISTED_FINDINGS = 500  # a task result stays readable; the counts are always complete


@contextmanager
def host_lock(engine: Engine, host: str) -> Iterator[bool]:
    """A session-level advisory lock on its own connection: released by us, or by PostgreSQL when
    the worker dies and its connection goes."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        key = f"mini-iaas:reconcile:{host}"
        got = bool(connection.scalar(text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": key}))
        try:
            yield got
        finally:
            if got:
                connection.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})


def _list_hypervisor(hv: Hypervisor, settings: Settings) -> tuple[list[DomainView], list[str]]:
    stats = hv.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    domains = [
        DomainView(
            dom.UUIDString(), dom.name(), power_state_of(st["state.state"], st.get("state.reason", -1))
        )
        for dom, st in stats
    ]
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    return domains, [volume.name() for volume in pool.listAllVolumes(0)]


def _load_database(session: Session, host: str, deadline_s: int, current: uuid.UUID) -> tuple[Any, Any]:
    busy = exists().where(Task.vm_id == Vm.id, Task.status.in_(ACTIVE_TASK_STATUSES))
    rows = session.execute(
        select(Vm.id, Vm.name, Vm.status, Vm.power_state, busy.label("busy")).where(
            Vm.host == host, Vm.status != VmStatus.DELETED
        )
    ).all()
    vms = {str(r.id): VmView(str(r.id), r.name, r.status, r.power_state, bool(r.busy)) for r in rows}
    deadline = func.coalesce(Task.deadline_at, Task.created_at + timedelta(seconds=deadline_s))
    stuck = [
        TaskView(str(t.id), t.kind, t.status, str(t.vm_id) if t.vm_id else None, t.deadline)
        for t in session.execute(
            select(Task.id, Task.kind, Task.status, Task.vm_id, deadline.label("deadline")).where(
                Task.host == host,
                Task.status.in_(ACTIVE_TASK_STATUSES),
                deadline < func.now(),
                Task.id != current,
            )
        ).all()
    ]
    return vms, stuck


def _is_ours(hv: Hypervisor, host: str) -> Any:
    def check(domain: DomainView) -> bool:
        try:
            xml = hv.conn.lookupByUUIDString(domain.uuid).XMLDesc(0)
        except libvirt.libvirtError:
            return False  # gone since the listing: nothing to act on
        return libvirt_xml.owner_vm_id(xml, host) is not None

    return check


def _recheck(findings: list[Finding], hv: Hypervisor) -> None:
    """Before a database repair, ask libvirt again about that one VM: a task may have finished
    between the listing and the database read (a domain defined just after the listing is not
    missing; a start just done is not drift). One call per finding, none per healthy VM."""
    for f in findings:
        if f.action == "log" or f.kind not in ("missing_domain", "power_drift") or not f.vm_id:
            continue
        now = hv.power_state(uuid.UUID(f.vm_id))
        if f.kind == "missing_domain" and now != PowerState.UNKNOWN:
            f.action, f.outcome = "log", "skipped: the domain exists now"
        elif f.kind == "power_drift" and now != f.detail["libvirt"]:
            f.action, f.outcome = "log", f"skipped: libvirt now says {now}"


def _repair(
    findings: list[Finding], hv: Hypervisor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """Carry out the configured actions: database repairs batched, libvirt repairs one call each."""
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    _recheck(findings, hv)
    drift = {
        uuid.UUID(f.vm_id): PowerState(f.detail["libvirt"])
        for f in findings
        if f.kind == "power_drift" and f.action == "fix" and f.vm_id
    }
    if drift:
        fixed = {str(vm_id) for vm_id in apply_power_states(sessions, drift)}
        for f in findings:
            if f.kind == "power_drift" and f.action == "fix":
                f.outcome = "fixed" if f.vm_id in fixed else "skipped: the VM got a task meanwhile"
    missing = [f for f in findings if f.kind == "missing_domain" and f.action == "mark_error"]
    if missing:
        busy = exists().where(Task.vm_id == Vm.id, Task.status.in_(ACTIVE_TASK_STATUSES))
        with transaction(sessions) as session:
            marked = set(
                map(str, session.scalars(
                    update(Vm)
                    .where(Vm.id.in_([uuid.UUID(f.vm_id) for f in missing if f.vm_id]),
                           Vm.status.in_((VmStatus.RUNNING, VmStatus.STOPPED)), ~busy)
                    .values(status=VmStatus.ERROR, power_state=PowerState.UNKNOWN)
                    .returning(Vm.id)
                ).all())
            )  # fmt: skip
        for f in missing:
            f.outcome = "marked error" if f.vm_id in marked else "skipped: the VM changed meanwhile"
    for f in findings:
        try:
            if f.kind == "ghost_domain" and f.action == "reap" and f.vm_id:
                hv.undefine_domain(uuid.UUID(f.vm_id))
                hv.delete_volume(pool, libvirt_xml.vm_volume_name(uuid.UUID(f.vm_id)))
                f.outcome = "reaped"
            elif f.kind == "orphan_volume" and f.action == "reap" and f.volume:
                hv.delete_volume(pool, f.volume)
                f.outcome = "reaped"
        except (libvirt.libvirtError, ValueError) as exc:
            f.outcome = f"failed: {exc}"
    stuck = [
        uuid.UUID(f.task_id) for f in findings if f.kind == "stuck_task" and f.action == "fail" and f.task_id
    ]
    if stuck:
        # Back to pending with the deadline passed: the sweep re-sends it, and its next run only
        # compensates what the journal says was done, then fails it.
        with transaction(sessions) as session:
            requeued = set(
                map(str, session.scalars(
                    update(Task)
                    .where(Task.id.in_(stuck), Task.status.in_(ACTIVE_TASK_STATUSES))
                    .values(status=TaskStatus.PENDING, lease_owner=None, lease_expires_at=None,
                            queued_at=None,
                            deadline_at=func.least(func.coalesce(Task.deadline_at, func.now()), func.now()))
                    .returning(Task.id)
                ).all())
            )  # fmt: skip
        for f in findings:
            if f.kind == "stuck_task" and f.action == "fail":
                f.outcome = (
                    "requeued to fail and compensate" if f.task_id in requeued else "finished meanwhile"
                )


def reconcile_host(
    hv: Hypervisor,
    sessions: sessionmaker[Session],
    engine: Engine,
    settings: Settings,
    current_task: uuid.UUID,
) -> dict[str, Any]:
    actions = parse_actions(settings.reconcile_actions)
    with host_lock(engine, settings.host) as locked:
        if not locked:
            return {"host": settings.host, "skipped": "another reconciliation of this host is running"}
        started = time.perf_counter()
        domains, volumes = _list_hypervisor(hv, settings)  # libvirt first: see _load_database's race
        with sessions() as session:
            vms, stuck = _load_database(session, settings.host, settings.task_deadline_s, current_task)
        findings = compare(vms, domains, volumes, stuck, _is_ours(hv, settings.host), actions)
        _repair(findings, hv, sessions, settings)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    if findings:
        log.info("reconcile %s: %s", settings.host, counts)
    return {
        "host": settings.host,
        "checked": {"domains": len(domains), "volumes": len(volumes), "vms": len(vms)},
        "actions": actions,
        "counts": counts,
        "findings": [f.as_dict() for f in findings[:MAX_LISTED_FINDINGS]],
        "findings_truncated": max(0, len(findings) - MAX_LISTED_FINDINGS),
        "elapsed_ms": elapsed_ms,
        "finished_at": datetime.now(UTC).isoformat(),
    }


def new_reconcile_task(sessions: sessionmaker[Session], host: str, request: dict[str, Any]) -> uuid.UUID:
    with transaction(sessions) as session:
        task = Task(
            id=uuid.uuid4(), kind=TaskKind.RECONCILE, host=host, status=TaskStatus.PENDING, request=request
        )
        session.add(task)
    return task.id
