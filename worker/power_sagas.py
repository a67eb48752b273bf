"""Start, stop and reboot: sagas with the same journal, failpoints and resume as create and destroy.

A power action does not move the VM to an intermediate status: its active task marks it busy (the
API refuses a second action with 409 vm_busy) and the last step records the outcome."""

from __future__ import annotations

from common.errors import StateChanged
from common.states import PowerState, VmStatus
from worker.saga import Step
from worker.vm_sagas import VmContext, move_vm, vm_status


def _require(*statuses: VmStatus) -> Step[VmContext]:
    """The first step: the VM must (still) be in one of `statuses` -- the API checked, this re-checks."""

    def check(ctx: VmContext) -> None:
        status = vm_status(ctx)
        if status not in statuses:
            raise StateChanged(f"VM {ctx.vm_id} is {status}, not {'/'.join(statuses)}; not acting on it")

    return Step("claim_vm", check)


def _started(ctx: VmContext) -> None:
    move_vm(ctx, (VmStatus.STOPPED, VmStatus.RUNNING), VmStatus.RUNNING, power_state=PowerState.RUNNING)


def _stopped(ctx: VmContext) -> None:
    move_vm(ctx, (VmStatus.RUNNING, VmStatus.STOPPED), VmStatus.STOPPED, power_state=PowerState.SHUTOFF)


def _shutdown(ctx: VmContext) -> None:
    force = bool(ctx.options.get("force", False))
    ctx.hv.shutdown_domain(ctx.vm_id, ctx.settings.stop_timeout_s, force=force)


def _reboot(ctx: VmContext) -> None:
    ctx.hv.reboot_domain(ctx.vm_id, force=bool(ctx.options.get("force", False)))


def _domain(ctx: VmContext) -> dict[str, str]:
    return {"domain_uuid": str(ctx.vm_id)}


START_STEPS: list[Step[VmContext]] = [
    # `running` too: a resumed run whose first run already got this far.
    _require(VmStatus.STOPPED, VmStatus.RUNNING),
    Step(
        "start_domain",
        lambda ctx: ctx.hv.start_domain(ctx.vm_id),
        undo=lambda ctx: ctx.hv.stop_domain(ctx.vm_id),
        undo_data=_domain,
    ),
    Step("mark_running", _started),
]

# A stop cannot be taken back; a failed one leaves the VM as the hypervisor has it (reconcile shows it).
STOP_STEPS: list[Step[VmContext]] = [
    _require(VmStatus.RUNNING, VmStatus.STOPPED),
    Step("shutdown_domain", _shutdown, undo_data=_domain),
    Step("mark_stopped", _stopped),
]

REBOOT_STEPS: list[Step[VmContext]] = [
    _require(VmStatus.RUNNING),
    Step("reboot_domain", _reboot, undo_data=_domain),
    Step("mark_running", _started),
]
