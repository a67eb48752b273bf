"""libvirt's domain states and lifecycle events, in mini-iaas's power-state vocabulary."""

from __future__ import annotations

import libvirt

from common.states import PowerState

_POWER_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,  # running, waiting on I/O
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
}

_EVENT_POWER = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
}

EVENT_NAMES = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{name}"): name.lower()
    for name in (
        *("DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED"),
        *("STOPPED", "SHUTDOWN", "PMSUSPENDED", "CRASHED"),
    )
}


def power_state_of(libvirt_state: int, reason: int = -1) -> PowerState:
    """libvirt's domain state (virDomainState, with its reason) in our vocabulary. A stop caused by a
    guest crash says `crashed`: what a user wants to see rather than a plain `shutoff`."""
    if libvirt_state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return PowerState.CRASHED
    return _POWER_STATES.get(libvirt_state, PowerState.UNKNOWN)


def power_state_for_event(event: int, detail: int) -> PowerState | None:
    """The power state a lifecycle event reports; None when it says nothing about power.

    SHUTDOWN only means the guest began to shut down: it still runs, and STOPPED follows once it is
    off, so the VM keeps saying `running` until then. DEFINED/UNDEFINED change the definition, not the
    power (undefining a running domain leaves it running); a domain that vanished is the reconciler's
    "missing domain" finding, not a power state. A stop caused by a guest crash says `crashed`."""
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
        return PowerState.CRASHED
    return _EVENT_POWER.get(event)


def power_state_for_domain_state(state: int, reason: int) -> PowerState | None:
    """The same vocabulary for a domain's current state; None for NOSTATE (no evidence)."""
    power = power_state_of(state, reason)
    return None if power == PowerState.UNKNOWN else power
