"""The libvirt lifecycle event -> power state -> status mapping, and how the listener's writer merges
events with a resync listing. Pure functions: no services."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from common.lifecycle import status_for_power
from common.states import PowerState, VmStatus
from worker.events.listener import PowerEvent, Resync, Writer
from worker.hypervisor.power import power_state_for_domain_state, power_state_for_event


@pytest.mark.parametrize(
    ("event", "detail", "power"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED, PowerState.RUNNING),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED, PowerState.RUNNING),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, PowerState.SHUTOFF),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, PowerState.SHUTOFF),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, PowerState.CRASHED),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED, PowerState.PAUSED),
        (
            libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED,
            libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY,
            PowerState.PAUSED,
        ),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED, PowerState.CRASHED),
        # The guest is shutting down but still runs: STOPPED follows when it is off.
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST, None),
        # Definition changes say nothing about power.
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED, None),
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED, None),
        (9999, 0, None),  # an event type newer than this code
    ],
)
def test_event_to_power_state(event: int, detail: int, power: PowerState | None) -> None:
    assert power_state_for_event(event, detail) == power


@pytest.mark.parametrize(
    ("state", "reason", "power"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, PowerState.RUNNING),
        (libvirt.VIR_DOMAIN_BLOCKED, 0, PowerState.RUNNING),
        (libvirt.VIR_DOMAIN_SHUTDOWN, 0, PowerState.RUNNING),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, PowerState.PAUSED),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, PowerState.PAUSED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, PowerState.SHUTOFF),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, PowerState.CRASHED),
        (libvirt.VIR_DOMAIN_CRASHED, 0, PowerState.CRASHED),
        (libvirt.VIR_DOMAIN_NOSTATE, 0, None),
    ],
)
def test_domain_state_to_power_state(state: int, reason: int, power: PowerState | None) -> None:
    assert power_state_for_domain_state(state, reason) == power


@pytest.mark.parametrize(
    ("power", "status"),
    [
        (PowerState.RUNNING, VmStatus.RUNNING),
        (PowerState.SHUTOFF, VmStatus.STOPPED),
        (PowerState.CRASHED, VmStatus.STOPPED),
        (PowerState.PAUSED, None),  # still up: the status stays what it was
        (PowerState.UNKNOWN, None),
    ],
)
def test_power_state_to_status(power: PowerState, status: VmStatus | None) -> None:
    assert status_for_power(power) == status


def _writer() -> Writer:
    return Writer(sessions=None, retry_s=1)  # type: ignore[arg-type] - merge() never touches it


def test_later_events_for_one_vm_win() -> None:
    vm = uuid.uuid4()
    events = [
        PowerEvent(vm, PowerState.SHUTOFF, at=1.0),
        PowerEvent(vm, PowerState.RUNNING, at=2.0),
    ]
    assert _writer().merge(list(events)) == {vm: PowerState.RUNNING}


def test_a_listing_loses_to_an_event_delivered_after_it_began() -> None:
    quiet, busy = uuid.uuid4(), uuid.uuid4()
    writer = _writer()
    # The domain stopped while the listing was under way; the listing may still say running.
    items: list[PowerEvent | Resync] = [
        PowerEvent(busy, PowerState.SHUTOFF, at=10.5),
        Resync({quiet: PowerState.RUNNING, busy: PowerState.RUNNING}, started_at=10.0),
    ]
    assert writer.merge(items) == {quiet: PowerState.RUNNING, busy: PowerState.SHUTOFF}
    # An event older than the listing is overruled by it.
    items = [
        PowerEvent(busy, PowerState.SHUTOFF, at=11.0),
        Resync({busy: PowerState.RUNNING}, started_at=12.0),
    ]
    assert writer.merge(items) == {busy: PowerState.RUNNING}
    # And an event queued after the listing is applied after it.
    items = [
        Resync({busy: PowerState.RUNNING}, started_at=13.0),
        PowerEvent(busy, PowerState.PAUSED, at=14.0),
    ]
    assert writer.merge(items) == {busy: PowerState.PAUSED}
