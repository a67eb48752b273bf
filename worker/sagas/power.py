"""Start, stop and reboot: sagas with the same journal, failpoints and resume as create and destroy.

A power action does not move the VM to an intermediate status: its active task marks it busy (the
API refuses a second action with 409 vm_busy) and the last step records the outcome. The stop and
the reboot step tell the task's `result` how they went (worker/sagas/engine.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from common.errors import StateChanged
from common.lifecycle import VmOp
from common.states import PowerState, VmStatus
from worker.sagas.context import VmContext, move_vm, start_with_networks, stop_recorded_domain, vm_status
from worker.sagas.engine import Step


def _requiring(*statuses: VmStatus) -> Callable[[VmContext], None]:
    def check(ctx: VmContext) -> None:
        status = vm_status(ctx)
        if status not in statuses:
            raise StateChanged(f"VM {ctx.vm_id} is {status}, not {'/'.join(statuses)}; not acting on it")

    return check


# The first step: the VM must (still) be in one of these -- the API checked, this re-checks. `running`
# for a start too: a resumed run whose first run already got that far.
require_startable = _requiring(VmStatus.STOPPED, VmStatus.RUNNING)
require_stoppable = _requiring(VmStatus.RUNNING, VmStatus.STOPPED)
require_running = _requiring(VmStatus.RUNNING)


def start_domain(ctx: VmContext) -> None:
    # Its networks are made again if they are gone (a host that rebooted with autostart turned off).
    start_with_networks(ctx)


def shutdown_domain(ctx: VmContext) -> dict[str, Any]:
    """Tells the task's result how it went: `graceful`, `forced` (asked to, or the guest ignored the
    power button for IAAS_STOP_TIMEOUT_S) or `already_off`, and how long it waited."""
    force = bool(ctx.options.get("force", False))
    started = time.monotonic()
    mode = ctx.hv.shutdown_domain(ctx.vm_id, ctx.settings.stop_timeout_s, force=force)
    return {"shutdown": mode, "waited_s": round(time.monotonic() - started, 2)}


def reboot_domain(ctx: VmContext) -> dict[str, Any]:
    """Tells the task's result which reboot: `acpi` (the guest was asked; it may ignore it, and
    nothing waits to see) or `reset` (done by the hypervisor)."""
    how = ctx.hv.reboot_domain(ctx.vm_id, force=bool(ctx.options.get("force", False)))
    return {"reboot": how, "confirmed": how == "reset"}


def mark_running(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.STARTED, power_state=PowerState.RUNNING)


def mark_stopped(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.STOPPED, power_state=PowerState.SHUTOFF)


def recorded_domain(ctx: VmContext) -> dict[str, str]:
    return {"domain_uuid": str(ctx.vm_id)}


START_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", require_startable),
    Step("start_domain", start_domain, undo=stop_recorded_domain, undo_data=recorded_domain),
    Step("mark_running", mark_running),
]

# A stop cannot be taken back; a failed one leaves the VM as the hypervisor has it (reconcile shows it).
STOP_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", require_stoppable),
    Step("shutdown_domain", shutdown_domain),
    Step("mark_stopped", mark_stopped),
]

REBOOT_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", require_running),
    Step("reboot_domain", reboot_domain),
    Step("mark_running", mark_running),
]
