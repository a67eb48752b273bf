"""Reconciliation of one host: libvirt's listing against the database, and the configured repairs.

Cost per run: one getAllDomainStats, one pool listing, two database queries, and batched writes;
a libvirt call per domain only for domains the database does not know (to read their ownership tag)
and per repair. Runs of the same host exclude each other through a PostgreSQL advisory lock."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from common import lifecycle
from common.config import Settings
from common.models import Network, Task, Vm
from common.states import ACTIVE_TASK_STATUSES, VmStatus
from worker.hypervisor import network_xml
from worker.hypervisor.connection import Hypervisor
from worker.metrics import RECONCILE_FINDINGS
from worker.reconcile.findings import DomainView, TaskView, VmView, compare, parse_actions
from worker.reconcile.repair import repair

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


def _list_hypervisor(
    hv: Hypervisor, settings: Settings
) -> tuple[list[DomainView], list[str], dict[str, str]]:
    domains = [DomainView(uuid_, name, power) for uuid_, name, power in hv.domain_states()]
    networks = {}
    for name in hv.network_names():
        network_id = network_xml.parse_network_name(name, settings.host)
        if network_id is not None:
            networks[name] = str(network_id)
    return domains, hv.volume_names(hv.pool(settings)), networks


def _load_database(session: Session, host: str, deadline_s: int, current: uuid.UUID) -> tuple[Any, Any]:
    busy = lifecycle.has_active_task()
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


def _known_networks(session: Session, network_ids: Iterable[str]) -> set[str]:
    """Which of the project networks the host's libvirt networks stand for the database still has."""
    wanted = [uuid.UUID(network_id) for network_id in network_ids]
    return {str(found) for found in session.scalars(select(Network.id).where(Network.id.in_(wanted)))}


def _is_ours(hv: Hypervisor, host: str) -> Any:
    def check(domain: DomainView) -> bool:
        return hv.owner_of(domain.uuid, host) is not None  # gone since the listing: not ours to act on

    return check


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
        # libvirt first: see _load_database's race
        domains, volumes, networks = _list_hypervisor(hv, settings)
        with sessions() as session:
            vms, stuck = _load_database(session, settings.host, settings.task_deadline_s, current_task)
            known_networks = _known_networks(session, networks.values())
        findings = compare(
            vms, domains, volumes, stuck, _is_ours(hv, settings.host), actions, networks, known_networks
        )
        repair(findings, hv, sessions, settings)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    counts: dict[str, int] = {}
    for f in findings:
        counts[str(f.kind)] = counts.get(str(f.kind), 0) + 1
        RECONCILE_FINDINGS.labels(str(f.kind), str(f.action)).inc()
    if findings:
        log.info("reconcile %s: %s", settings.host, counts)
    return {
        "host": settings.host,
        "checked": {
            "domains": len(domains),
            "volumes": len(volumes),
            "vms": len(vms),
            "networks": len(networks),
        },
        "actions": actions,
        "counts": counts,
        "findings": [f.as_dict() for f in findings[:MAX_LISTED_FINDINGS]],
        "findings_truncated": max(0, len(findings) - MAX_LISTED_FINDINGS),
        "elapsed_ms": elapsed_ms,
        "finished_at": datetime.now(UTC).isoformat(),
    }
