"""`iaas-events`: one per hypervisor host. Turns libvirt's domain lifecycle events into each VM's live
power state (and `running`<->`stopped` status) in the database within milliseconds, instead of at the
next reconciliation.

Three threads: libvirt's event loop runs the callbacks, which only put events on a queue; the writer
drains that queue into the database (batched, retried through outages); the main thread connects,
reconnects with capped backoff when libvirtd goes away, resyncs after every (re)connection because
events are lost while disconnected, and stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt
from sqlalchemy.orm import Session, sessionmaker
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from common.config import get_settings
from common.db import db_retrying, make_engine, make_session_factory
from common.states import PowerState
from worker.hypervisor import ensure_event_loop, power_state_of, set_keepalive
from worker.power_sync import apply_power_states

log = logging.getLogger("iaas.events")

_EVENT_POWER = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
}
_EVENT_NAMES = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{name}"): name.lower()
    for name in (
        *("DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED"),
        *("STOPPED", "SHUTDOWN", "PMSUSPENDED", "CRASHED"),
    )
}


def power_state_for_event(event: int, detail: int) -> PowerState | None:
    """The power state a lifecycle event reports; None when it says nothing about power.

    SHUTDOWN only means the guest began to shut down: it still runs, and STOPPED follows once it is
    off, so the VM keeps saying `running` until then. DEFINED/UNDEFINED change the definition, not the
    power (undefining a running domain leaves it running); a domain that vanished is the reconciler's
    "missing domain" finding, not a power state. A stop caused by a guest crash says `crashed`: what
    a user wants to see rather than a plain `shutoff`."""
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
        return PowerState.CRASHED
    return _EVENT_POWER.get(event)


def power_state_for_domain_state(state: int, reason: int) -> PowerState | None:
    """The same vocabulary for a domain's current state (the reconciler reads it the same way)."""
    power = power_state_of(state, reason)
    return None if power == PowerState.UNKNOWN else power  # NOSTATE: no evidence


@dataclass(frozen=True)
class PowerEvent:
    vm_id: uuid.UUID
    power_state: PowerState
    at: float  # time.monotonic() when libvirt delivered it


@dataclass(frozen=True)
class Resync:
    power_states: dict[uuid.UUID, PowerState]
    started_at: float  # time.monotonic() just before the listing call


class Writer:
    """Drains the queue into the database; whatever queued up meanwhile goes in one statement."""

    def __init__(self, sessions: sessionmaker[Session], retry_s: float) -> None:
        self.queue: queue.Queue[PowerEvent | Resync | None] = queue.Queue()  # None: stop
        self._sessions = sessions
        self._retry_s = retry_s
        self._last_event_at: dict[uuid.UUID, float] = {}

    def run(self) -> None:
        while True:
            items = [self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            batch = self.merge([item for item in items if item is not None])
            if batch:
                self._write(batch)
            if None in items:
                return

    def merge(self, items: list[PowerEvent | Resync]) -> dict[uuid.UUID, PowerState]:
        """The latest word per VM, in queue order. A listing loses to an event delivered after the
        listing began: the event is at least as new, and the listing may have been taken before it."""
        batch: dict[uuid.UUID, PowerState] = {}
        for item in items:
            if isinstance(item, PowerEvent):
                batch[item.vm_id] = item.power_state
                self._last_event_at[item.vm_id] = item.at
                continue
            for vm_id, power in item.power_states.items():
                if self._last_event_at.get(vm_id, float("-inf")) < item.started_at:
                    batch[vm_id] = power
            self._last_event_at = {k: t for k, t in self._last_event_at.items() if t >= item.started_at}
        return batch

    def _write(self, batch: dict[uuid.UUID, PowerState]) -> None:
        try:
            for attempt in db_retrying(self._retry_s):
                with attempt:
                    changed = apply_power_states(self._sessions, batch)
        except Exception:
            log.exception("could not record the power of %d VMs; reconciliation corrects them", len(batch))
            return
        for vm_id in changed:
            log.info("VM %s: power_state %s recorded", vm_id, batch[vm_id])


class Listener:
    """Holds the libvirt connection: (re)connects, registers the callbacks, resyncs."""

    def __init__(self, uri: str, out: queue.Queue[PowerEvent | Resync | None]) -> None:
        self.uri = uri
        self._out = out
        self._stopping = threading.Event()
        self._wake = threading.Event()  # the connection closed, or we are stopping
        self._callback_id: int | None = None

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        connected_before = False
        while not self._stopping.is_set():
            self._wake.clear()
            conn = self._connect()
            if conn is None:
                return
            verb = "reconnected to" if connected_before else "connected to"
            log.info("%s %s; listening for lifecycle events", verb, self.uri)
            connected_before = True
            try:
                self._resync(conn)
            except libvirt.libvirtError as exc:  # the connection died again: the loop below notices
                log.warning("resync failed: %s", exc)
            # The close callback normally wakes us; the periodic check is a safety net.
            while not self._wake.wait(timeout=30) and conn.isAlive():
                pass
            _close_quietly(conn, self._callback_id)

    def _connect(self) -> libvirt.virConnect | None:
        retrying = Retrying(
            retry=retry_if_exception_type(libvirt.libvirtError),
            wait=wait_exponential(multiplier=0.1, max=2),  # a local daemon: cheap to ask often
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=self._unreachable,
            reraise=True,
        )
        try:
            return retrying(self._open)
        except libvirt.libvirtError:
            return None  # only when stopping

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # SIGTERM cuts a backoff short

    def _open(self) -> libvirt.virConnect:
        conn = libvirt.open(self.uri)
        try:
            set_keepalive(conn)
            conn.registerCloseCallback(self._on_close, None)
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            )
        except libvirt.libvirtError:
            _close_quietly(conn)
            raise
        return conn

    def _unreachable(self, state: RetryCallState) -> None:
        if state.attempt_number == 1 or state.attempt_number % 30 == 0:
            exc = state.outcome.exception() if state.outcome else None
            log.error(
                "cannot reach libvirt at %s (%s). Is libvirtd running? Start it with `libvirtd -d` "
                "(or `make services`); retrying every 2 s meanwhile.",
                self.uri,
                exc,
            )

    def _resync(self, conn: libvirt.virConnect) -> None:
        """One listing of every domain's state: events that fired while we were away are lost."""
        started_at = time.monotonic()
        power_states = {}
        for domain, record in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
            power = power_state_for_domain_state(
                record.get("state.state", -1), record.get("state.reason", -1)
            )
            if power is not None:
                power_states[uuid.UUID(domain.UUIDString())] = power
        log.info("resync: %d domains listed", len(power_states))
        self._out.put(Resync(power_states, started_at))

    # --- called on libvirt's event-loop thread: quick, no database work ---------------------------

    def _on_lifecycle(
        self, _conn: Any, domain: libvirt.virDomain, event: int, detail: int, _opaque: Any
    ) -> None:
        try:
            at = time.monotonic()
            power = power_state_for_event(event, detail)
            vm_id = uuid.UUID(domain.UUIDString())
            name = _EVENT_NAMES.get(event, str(event))
            log.info("domain %s (%s): %s/%d -> %s", domain.name(), vm_id, name, detail, power or "no change")
            if power is not None:
                self._out.put(PowerEvent(vm_id, power, at))
        except Exception:  # one bad event must not stop the others
            log.exception("ignoring a lifecycle event that could not be handled")

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("connection to %s closed (reason %d); reconnecting", self.uri, reason)
        self._wake.set()


def _close_quietly(conn: libvirt.virConnect, callback_id: int | None = None) -> None:
    """Drop a connection that may be dead already: each step may fail, none may stop the others."""
    steps: list[Callable[[], object]] = [conn.unregisterCloseCallback, conn.close]
    if callback_id is not None:
        steps.insert(0, lambda: conn.domainEventDeregisterAny(callback_id))
    for step in steps:
        with contextlib.suppress(libvirt.libvirtError):
            step()


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised, handled and logged."""


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    libvirt.registerErrorHandler(_quiet, None)
    ensure_event_loop()  # before any connection is opened, or it gets no events
    writer = Writer(make_session_factory(make_engine(settings.database_url)), settings.db_retry_s)
    writer_thread = threading.Thread(target=writer.run, name="db-writer", daemon=True)
    writer_thread.start()
    listener = Listener(settings.libvirt_uri, writer.queue)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: listener.stop())
    log.info("iaas-events for host %s: libvirt %s", settings.host, settings.libvirt_uri)
    listener.run()
    writer.queue.put(None)
    writer_thread.join(timeout=5)
    if writer_thread.is_alive():
        log.warning("stopping with power states unwritten (database unreachable); the next start resyncs")
    log.info("stopped")


if __name__ == "__main__":
    main()
