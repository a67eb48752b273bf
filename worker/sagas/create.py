"""The create saga: claim the record, make the disk and the NoCloud seed, make sure the VM's networks
exist on this host, define and start the domain, mark it running. Each undo takes back what its step
recorded it was about to make."""

from __future__ import annotations

import io
import ipaddress
import os
from typing import Any

from common.errors import StateChanged
from common.lifecycle import VmOp
from common.states import PowerState
from worker import guest_networks
from worker.hypervisor import domain_xml
from worker.sagas.context import (
    GIB,
    VmContext,
    delete_recorded_seed,
    delete_recorded_volume,
    move_vm,
    remove_recorded_networks,
    start_with_networks,
    stop_recorded_domain,
    undefine_recorded_domain,
)
from worker.sagas.engine import Step
from worker.seed import SeedInterface, SeedSpec, build_seed_iso


def claim_for_build(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.BUILD)


def mark_build_failed(ctx: VmContext, _data: dict[str, Any]) -> None:
    # The checkpoint's undo: whatever else was undone, the record ends in `error`, never `building`.
    move_vm(ctx, VmOp.BUILD_FAILED)


def create_volume(ctx: VmContext) -> None:
    ctx.hv.create_overlay_volume(
        ctx.hv.pool(ctx.settings), ctx.volume_name, ctx.disk_gib * GIB, ctx.image_path
    )


def seed_spec(ctx: VmContext) -> SeedSpec:
    return SeedSpec(
        instance_id=str(ctx.vm_id),
        hostname=ctx.name,
        interfaces=tuple(
            SeedInterface(f"eth{position}", nic.mac, f"{ipaddress.ip_address(nic.ip)}/{nic.prefix}")
            for position, nic in enumerate(ctx.nics)
        ),
        authorized_keys=(ctx.public_key,) if ctx.public_key else (),
        user_data=ctx.user_data,
    )


def create_seed(ctx: VmContext) -> None:
    """The VM's NoCloud seed as a raw volume, uploaded through libvirt. A volume left by a run that
    died mid-upload is replaced: the content is a function of the VM's record, so it is the same."""
    iso = build_seed_iso(seed_spec(ctx))
    pool = ctx.hv.pool(ctx.settings)
    ctx.hv.delete_volume(pool, ctx.seed_volume_name)
    ctx.hv.upload_volume(pool, ctx.seed_volume_name, io.BytesIO(iso), len(iso), "raw")


def ensure_networks(ctx: VmContext) -> None:
    guest_networks.ensure_networks(ctx.hv, ctx.sessions, ctx.network_names)


def define_domain(ctx: VmContext) -> None:
    os.makedirs(ctx.settings.console_log_dir, exist_ok=True)
    pool = ctx.hv.pool(ctx.settings)
    volume = ctx.hv.find_volume(pool, ctx.volume_name)
    seed = ctx.hv.find_volume(pool, ctx.seed_volume_name)
    if volume is None or seed is None:
        raise StateChanged(
            f"volume {ctx.volume_name} or {ctx.seed_volume_name} vanished before the domain could use it"
        )
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
        seed_path=seed.path(),
        nics=tuple(
            domain_xml.NicSpec(nic.mac, network)
            for nic, network in zip(ctx.nics, ctx.network_names, strict=True)
        ),
    )
    ctx.hv.define_domain(domain_xml.domain_xml(spec))


def start_domain(ctx: VmContext) -> None:
    start_with_networks(ctx)


def mark_running(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.BUILT, power_state=PowerState.RUNNING)


def recorded_resources(ctx: VmContext) -> dict[str, Any]:
    return ctx.resources()


CREATE_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", claim_for_build, undo=mark_build_failed),
    Step("create_volume", create_volume, undo=delete_recorded_volume, undo_data=recorded_resources),
    Step("create_seed", create_seed, undo=delete_recorded_seed, undo_data=recorded_resources),
    Step("ensure_networks", ensure_networks, undo=remove_recorded_networks, undo_data=recorded_resources),
    Step("define_domain", define_domain, undo=undefine_recorded_domain, undo_data=recorded_resources),
    Step("start_domain", start_domain, undo=stop_recorded_domain, undo_data=recorded_resources),
    Step("mark_running", mark_running),
]
