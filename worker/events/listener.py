"""`iaas-events`: one per hypervisor host. Turns libvirt's domain lifecycle events into each VM's live
power state (and `running`<->`stopped` status) in the database within milliseconds, instead of at the
next reconciliation.

Three threads: libvirt's event loop runs the callbacks, which only put events on a queue; the writer
drains that queue into the database (batched, retried through outages); the main thread connects,
reconnects with capped backoff when libvirtd goes away, resyncs after every (re)connection because
events are lost while disconnected, and stops cleanly on SIGTERM. Its metrics (event-to-database lag,
events, reconnections) are served on IAAS_EVENTS_METRICS_PORT."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from common import lifecycle, logs, metrics
from common.config import get_settings
from common.db import db_retrying, make_engine, make_session_factory, transaction
from common.states import PowerState
from worker.events.metrics import EVENT_DB_LAG, LIBVIRT_CONNECTIONS, POWER_EVENTS
from worker.hypervisor.connection import LibvirtError, ensure_event_loop
from worker.hypervisor.lifecycle_events import EventSubscription, LifecycleEvent

log = logging.getLogger("iaas.events")


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
            if batch and self._write(batch):
                written = time.monotonic()
                for item in items:  # each event's lag, from libvirt's delivery to the commit
                    if isinstance(item, PowerEvent):
                        EVENT_DB_LAG.observe(written - item.at)
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

    def _write(self, batch: dict[uuid.UUID, PowerState]) -> bool:
        try:
            for attempt in db_retrying(self._retry_s):
                with attempt, transaction(self._sessions) as session:
                    changed = lifecycle.sync_power_states(session, batch)
        except Exception:
            log.exception("could not record the power of %d VMs; reconciliation corrects them", len(batch))
            return False
        for vm_id in changed:
            log.info("VM %s: power_state %s recorded", vm_id, batch[vm_id], extra={"vm_id": str(vm_id)})
        return True


class Listener:
    """Holds the event subscription: (re)connects, resyncs, reconnects when libvirtd goes away."""

    def __init__(self, uri: str, out: queue.Queue[PowerEvent | Resync | None]) -> None:
        self.uri = uri
        self._out = out
        self._stopping = threading.Event()
        self._wake = threading.Event()  # the connection closed, or we are stopping

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        connected_before = False
        while not self._stopping.is_set():
            self._wake.clear()
            subscription = self._connect()
            if subscription is None:
                return
            LIBVIRT_CONNECTIONS.inc()
            verb = "reconnected to" if connected_before else "connected to"
            log.info("%s %s; listening for lifecycle events", verb, self.uri)
            connected_before = True
            try:
                self._resync(subscription)
            except LibvirtError as exc:  # the connection died again: the loop below notices
                log.warning("resync failed: %s", exc)
            # The close callback normally wakes us; the periodic check is a safety net.
            while not self._wake.wait(timeout=30) and subscription.alive():
                pass
            subscription.close()

    def _connect(self) -> EventSubscription | None:
        retrying = Retrying(
            retry=retry_if_exception_type(LibvirtError),
            wait=wait_exponential(multiplier=0.1, max=2),  # a local daemon: cheap to ask often
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=self._unreachable,
            reraise=True,
        )
        try:
            return retrying(EventSubscription, self.uri, self._on_lifecycle, self._on_close)
        except LibvirtError:
            return None  # only when stopping

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # SIGTERM cuts a backoff short

    def _unreachable(self, state: RetryCallState) -> None:
        if state.attempt_number == 1 or state.attempt_number % 30 == 0:
            exc = state.outcome.exception() if state.outcome else None
            log.error(
                "cannot reach libvirt at %s (%s). Is libvirtd running? Start it with `libvirtd -d` "
                "(or `make services`); retrying every 2 s meanwhile.",
                self.uri,
                exc,
            )

    def _resync(self, subscription: EventSubscription) -> None:
        """One listing of every domain's state: events that fired while we were away are lost."""
        started_at = time.monotonic()
        power_states = subscription.power_states()
        log.info("resync: %d domains listed", len(power_states))
        self._out.put(Resync(power_states, started_at))

    # --- called on libvirt's event-loop thread: quick, no database work ---------------------------

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        at = time.monotonic()
        power = event.power_state
        log.info(
            "domain %s (%s): %s/%d -> %s", event.domain, event.vm_id, event.event, event.detail,
            power or "no change",
        )  # fmt: skip
        if power is not None:
            POWER_EVENTS.labels(str(power)).inc()
            self._out.put(PowerEvent(event.vm_id, power, at))

    def _on_close(self, reason: int) -> None:
        log.warning("connection to %s closed (reason %d); reconnecting", self.uri, reason)
        self._wake.set()


def main() -> None:
    settings = get_settings()
    logs.configure(settings.log_format)
    metrics.serve(settings.events_metrics_port, settings.metrics_address, "iaas-events")
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
