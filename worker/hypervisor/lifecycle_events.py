"""A libvirt connection that delivers domain lifecycle events (for `iaas-events`), already translated
into our vocabulary: the listener above it never sees a libvirt object."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from common.states import PowerState
from worker.hypervisor.connection import set_keepalive
from worker.hypervisor.power import EVENT_NAMES, power_state_for_domain_state, power_state_for_event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LifecycleEvent:
    vm_id: uuid.UUID
    domain: str  # the domain's name, for the log
    event: str  # started, stopped, ...
    detail: int
    power_state: PowerState | None  # None: the event says nothing about power


class EventSubscription:
    """One open connection with a lifecycle callback and a close callback registered.

    Callbacks run on libvirt's event-loop thread (worker.hypervisor.connection.ensure_event_loop
    must have started it before opening): they must be quick and must not raise."""

    def __init__(
        self,
        uri: str,
        on_event: Callable[[LifecycleEvent], None],
        on_close: Callable[[int], None],
    ) -> None:
        self._on_event = on_event
        self._on_close = on_close
        self._conn = libvirt.open(uri)
        self._callback_id: int | None = None
        try:
            set_keepalive(self._conn)
            self._conn.registerCloseCallback(self._closed, None)
            self._callback_id = self._conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
        except libvirt.libvirtError:
            self.close()
            raise

    def alive(self) -> bool:
        return bool(self._conn.isAlive())

    def power_states(self) -> dict[uuid.UUID, PowerState]:
        """Every domain's current power state, from one listing (NOSTATE domains left out)."""
        states = {}
        for domain, record in self._conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
            power = power_state_for_domain_state(
                record.get("state.state", -1), record.get("state.reason", -1)
            )
            if power is not None:
                states[uuid.UUID(domain.UUIDString())] = power
        return states

    def close(self) -> None:
        """Drop a connection that may be dead already: each step may fail, none may stop the others."""
        steps: list[Callable[[], object]] = [self._conn.unregisterCloseCallback, self._conn.close]
        if self._callback_id is not None:
            callback_id = self._callback_id
            steps.insert(0, lambda: self._conn.domainEventDeregisterAny(callback_id))
        for step in steps:
            with contextlib.suppress(libvirt.libvirtError):
                step()

    # --- on libvirt's event-loop thread ----------------------------------------------------------

    def _lifecycle(
        self, _conn: Any, domain: libvirt.virDomain, event: int, detail: int, _opaque: Any
    ) -> None:
        try:
            self._on_event(
                LifecycleEvent(
                    vm_id=uuid.UUID(domain.UUIDString()),
                    domain=domain.name(),
                    event=EVENT_NAMES.get(event, str(event)),
                    detail=detail,
                    power_state=power_state_for_event(event, detail),
                )
            )
        except Exception:  # one bad event must not stop the others
            log.exception("ignoring a lifecycle event that could not be handled")

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._on_close(reason)
