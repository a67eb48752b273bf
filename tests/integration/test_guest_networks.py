"""A host's libvirt networks on the test driver: made idempotently, removed only when no domain is on
them, and a removal waits for the lock a starting saga holds (PostgreSQL advisory locks)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import text

from common.config import Settings
from tests.support.polling import poll
from worker import guest_networks
from worker.hypervisor import domain_xml, network_xml
from worker.hypervisor.connection import Hypervisor


def a_network(settings: Settings) -> str:
    return network_xml.network_name(settings.host, uuid.uuid4())


def define_domain_on(hv: Hypervisor, network: str) -> uuid.UUID:
    vm_id = uuid.uuid4()
    spec = domain_xml.DomainSpec(
        vm_id, f"net-{vm_id.hex[:6]}", "tiny", 1, 64, "/dev/null", "/tmp/unused.log", "test",
        nics=(domain_xml.NicSpec("52:54:00:aa:bb:cc", network),),
    )  # fmt: skip
    hv.define_domain(domain_xml.domain_xml(spec))
    return vm_id


def test_ensure_is_idempotent_and_removal_keeps_a_network_in_use(settings: Settings, sessions: Any) -> None:
    hv = Hypervisor(settings.libvirt_uri)
    used, unused = a_network(settings), a_network(settings)
    guest_networks.ensure_networks(hv, sessions, [used, unused])
    guest_networks.ensure_networks(hv, sessions, [used, unused])
    assert {used, unused} <= set(hv.network_names())
    vm_id = define_domain_on(hv, used)

    assert guest_networks.remove_unused_networks(hv, sessions, [used, unused]) == [unused]
    assert used in hv.network_names() and unused not in hv.network_names()

    hv.undefine_domain(vm_id)
    assert guest_networks.remove_unused_networks(hv, sessions, [used]) == [used]
    assert guest_networks.remove_unused_networks(hv, sessions, [used]) == []  # already gone: no error


def waiting_for_an_advisory_lock(sessions: Any) -> bool | None:
    with sessions() as session:
        waiting = session.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
    return True if waiting else None


def test_a_removal_waits_while_a_start_holds_the_networks_lock(settings: Settings, sessions: Any) -> None:
    hv = Hypervisor(settings.libvirt_uri)
    name = a_network(settings)
    guest_networks.ensure_networks(hv, sessions, [name])
    removed: list[list[str]] = []
    with guest_networks.network_locks(sessions, [name]):  # what a starting saga holds
        remover = threading.Thread(
            target=lambda: removed.append(guest_networks.remove_unused_networks(hv, sessions, [name]))
        )
        remover.start()
        poll(
            lambda: waiting_for_an_advisory_lock(sessions),
            timeout=10,
            what="the removal to wait for the lock",
        )
        assert removed == [] and name in hv.network_names()
        vm_id = define_domain_on(hv, name)  # the saga's domain appears while it holds the lock
    remover.join(timeout=10)
    assert removed == [[]] and name in hv.network_names()  # it saw the domain: kept
    hv.undefine_domain(vm_id)
    guest_networks.remove_unused_networks(hv, sessions, [name])
