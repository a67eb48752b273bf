"""Reconciliation and lifecycle events through the libvirt wrapper (worker/hypervisor/), against
libvirt's own test driver in this process: no qemu, no worker process."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from common.config import Settings
from common.db import transaction
from common.models import Vm
from common.states import PowerState, VmStatus
from tests.support.polling import poll
from tests.support.tokens import project_id
from worker.hypervisor import domain_xml
from worker.hypervisor.connection import Hypervisor, ensure_event_loop
from worker.hypervisor.lifecycle_events import EventSubscription, LifecycleEvent
from worker.reconcile.run import reconcile_host


def define(hv: Hypervisor, settings: Settings, name: str, *, owner_host: str) -> uuid.UUID:
    vm_id = uuid.uuid4()
    spec = domain_xml.DomainSpec(
        vm_id, name, "tiny", 1, 64, f"/pool/{name}.qcow2", f"/tmp/{name}.log", "test", host=owner_host
    )
    hv.define_domain(domain_xml.domain_xml(spec))
    return vm_id


def test_reconcile_through_the_wrapper_reaps_a_ghost_and_marks_a_missing_domain(
    settings: Settings, sessions: Any, engine: Any
) -> None:
    hv = Hypervisor(settings.libvirt_uri)
    repairing = settings.model_copy(
        update={"reconcile_actions": "ghost_domain=reap,missing_domain=mark_error"}
    )
    ghost = define(hv, settings, "ghost", owner_host=settings.host)
    foreign = define(hv, settings, "foreign", owner_host="another-host")
    missing = uuid.uuid4()
    with transaction(sessions) as session:
        session.add(
            Vm(id=missing, name="lost", image="tiny", vcpus=1, memory_mib=64, disk_gib=1,
               status=VmStatus.RUNNING, power_state=PowerState.RUNNING, host=settings.host,
               project_id=project_id(sessions))
        )  # fmt: skip
    try:
        result = reconcile_host(hv, sessions, engine, repairing, uuid.uuid4())

        outcomes = {(f["kind"], f.get("vm_id"), f["outcome"]) for f in result["findings"]}
        assert ("ghost_domain", str(ghost), "reaped") in outcomes
        assert ("missing_domain", str(missing), "marked error") in outcomes
        assert {f["kind"] for f in result["findings"] if f.get("domain", "").startswith("iaas-foreign")} == {
            "foreign_domain"
        }
        assert hv.find_domain(ghost) is None  # reaped in libvirt
        assert hv.find_domain(foreign) is not None  # never touched
        with sessions() as session:
            assert session.scalar(select(Vm.status).where(Vm.id == missing)) == VmStatus.ERROR
    finally:
        hv.undefine_domain(foreign)
        hv.close()


def test_lifecycle_events_arrive_through_the_subscription() -> None:
    """test:///default is one driver per process, so the subscription sees what the wrapper does."""
    ensure_event_loop()
    events: list[LifecycleEvent] = []
    subscription = EventSubscription("test:///default", events.append, lambda _reason: None)
    hv = Hypervisor("test:///default")
    settings = Settings(host="itest")
    vm_id = define(hv, settings, f"evt-{uuid.uuid4().hex[:6]}", owner_host="itest")
    try:
        hv.start_domain(vm_id)

        def started() -> bool | None:
            return (
                True
                if any(e.vm_id == vm_id and e.power_state == PowerState.RUNNING for e in events)
                else None
            )

        poll(started, timeout=10, what="a started event for the domain")
        assert subscription.power_states()[vm_id] == PowerState.RUNNING
        hv.stop_domain(vm_id)
        poll(
            lambda: (
                True
                if any(e.vm_id == vm_id and e.power_state == PowerState.SHUTOFF for e in events)
                else None
            ),
            timeout=10,
            what="a stopped event for the domain",
        )
        assert subscription.alive()
    finally:
        hv.undefine_domain(vm_id)
        hv.close()
        subscription.close()
