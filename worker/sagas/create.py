"""The create saga: claim the record, make the disk, define and start the domain, mark it running.
Each undo takes back what its step recorded it was about to make."""

from __future__ import annotations

import os
from typing import Any

from common.errors import StateChanged
from common.lifecycle import VmOp
from common.states import PowerState
from worker.hypervisor import domain_xml
from worker.sagas.context import (
    GIB,
    VmContext,
    delete_recorded_volume,
    move_vm,
    stop_recorded_domain,
    undefine_recorded_domain,
)
from worker.sagas.engine import Step


def claim_for_build(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.BUILD)


def mark_build_failed(ctx: VmContext, _data: dict[str, Any]) -> None:
    # The checkpoint's undo: whatever else was undone, the record ends in `error`, never `building`.
    move_vm(ctx, VmOp.BUILD_FAILED)


def create_volume(ctx: VmContext) -> None:
    ctx.hv.create_overlay_volume(
        ctx.hv.pool(ctx.settings), ctx.volume_name, ctx.disk_gib * GIB, ctx.image_path
    )


def define_domain(ctx: VmContext) -> None:
    os.makedirs(ctx.settings.console_log_dir, exist_ok=True)
    volume = ctx.hv.find_volume(ctx.hv.pool(ctx.settings), ctx.volume_name)
    if volume is None:
        raise StateChanged(f"volume {ctx.volume_name} vanished before the domain could use it")
    spec = domain_xml.DomainSpec(
        vm_id=ctx.vm_id,
        name=ctx.name,
        image=ctx.image,
        vcpus=ctx.vcpus,
        memory_mib=ctx.memory_mib,
        disk_path=volume.path(),
        console_log=ctx.console_log,
        domain_type=domain_xml.resolve_domain_type(ctx.settings.domain_type, ctx.settings.libvirt_uri),
        host=ctx.settings.host,
    )
    ctx.hv.define_domain(domain_xml.domain_xml(spec))


def start_domain(ctx: VmContext) -> None:
    ctx.hv.start_domain(ctx.vm_id)


def mark_running(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.BUILT, power_state=PowerState.RUNNING)


def recorded_resources(ctx: VmContext) -> dict[str, Any]:
    return ctx.resources()


CREATE_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", claim_for_build, undo=mark_build_failed),
    Step("create_volume", create_volume, undo=delete_recorded_volume, undo_data=recorded_resources),
    Step("define_domain", define_domain, undo=undefine_recorded_domain, undo_data=recorded_resources),
    Step("start_domain", start_domain, undo=stop_recorded_domain, undo_data=recorded_resources),
    Step("mark_running", mark_running),
]
