"""The create and destroy sagas of a VM, as lists of small idempotent steps."""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import db_retrying, transaction
from common.errors import StateChanged
from common.models import Image, Vm
from common.states import PowerState, VmStatus
from worker import libvirt_xml
from worker.hypervisor import Hypervisor
from worker.saga import Step

GIB = 1024**3


@dataclass(frozen=True)
class VmContext:
    vm_id: uuid.UUID
    name: str
    image: str
    image_path: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    settings: Settings
    hv: Hypervisor
    sessions: sessionmaker[Session]
    # The task's request options (e.g. {"force": true} for a stop).
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        session: Session,
        vm: Vm,
        settings: Settings,
        hv: Hypervisor,
        sessions: sessionmaker[Session],
        options: dict[str, Any] | None = None,
    ) -> VmContext:
        image = session.scalars(select(Image).where(Image.name == vm.image)).one()
        return cls(
            vm.id, vm.name, vm.image, image.path, vm.vcpus, vm.memory_mib, vm.disk_gib,
            settings, hv, sessions, dict(options or {}),
        )  # fmt: skip

    @property
    def volume_name(self) -> str:
        return libvirt_xml.vm_volume_name(self.vm_id)

    @property
    def console_log(self) -> str:
        return os.path.join(self.settings.console_log_dir, f"{self.vm_id}.log")

    def pool(self) -> Any:
        return self.hv.ensure_pool(self.settings.storage_pool, self.settings.storage_pool_path)


def move_vm(
    ctx: VmContext,
    expected: tuple[VmStatus, ...],
    new: VmStatus,
    *,
    settled: tuple[VmStatus, ...] = (),
    **values: Any,
) -> None:
    """Compare-and-set a VM's status; fails loudly when another actor moved it first -- unless the VM
    is already in one of the `settled` states, where there is nothing left to do."""

    def unit() -> Any:
        with transaction(ctx.sessions) as session:
            return session.execute(
                update(Vm)
                .where(Vm.id == ctx.vm_id, Vm.status.in_(expected))
                .values(status=new, **values)
                .returning(Vm.id)
            ).first()

    moved = db_retrying(ctx.settings.db_retry_s)(unit)
    if moved is None and not (settled and vm_status(ctx) in settled):
        raise StateChanged(
            f"VM {ctx.vm_id} is no longer in {[s.value for s in expected]}; not moving it to {new}"
        )


def vm_status(ctx: VmContext) -> str | None:
    def read() -> str | None:
        with ctx.sessions() as session:
            return session.scalar(select(Vm.status).where(Vm.id == ctx.vm_id))

    return db_retrying(ctx.settings.db_retry_s)(read)


# --- create ----------------------------------------------------------------------------------------


def _claim_for_build(ctx: VmContext) -> None:
    move_vm(ctx, (VmStatus.PENDING, VmStatus.BUILDING), VmStatus.BUILDING)


def _mark_build_failed(ctx: VmContext) -> None:
    # The checkpoint's undo: whatever else was undone, the record ends in `error`, never `building`.
    # RUNNING too: a failure after mark_running acted (but before the task finished) still compensates.
    move_vm(ctx, (VmStatus.PENDING, VmStatus.BUILDING, VmStatus.RUNNING, VmStatus.ERROR), VmStatus.ERROR)


def _create_volume(ctx: VmContext) -> None:
    ctx.hv.create_overlay_volume(ctx.pool(), ctx.volume_name, ctx.disk_gib * GIB, ctx.image_path)


def _delete_volume(ctx: VmContext) -> None:
    ctx.hv.delete_volume(ctx.pool(), ctx.volume_name)


def _define_domain(ctx: VmContext) -> None:
    os.makedirs(ctx.settings.console_log_dir, exist_ok=True)
    volume = ctx.hv.find_volume(ctx.pool(), ctx.volume_name)
    if volume is None:
        raise StateChanged(f"volume {ctx.volume_name} vanished before the domain could use it")
    spec = libvirt_xml.DomainSpec(
        vm_id=ctx.vm_id,
        name=ctx.name,
        image=ctx.image,
        vcpus=ctx.vcpus,
        memory_mib=ctx.memory_mib,
        disk_path=volume.path(),
        console_log=ctx.console_log,
        domain_type=libvirt_xml.resolve_domain_type(ctx.settings.domain_type, ctx.settings.libvirt_uri),
        host=ctx.settings.host,
    )
    ctx.hv.define_domain(libvirt_xml.domain_xml(spec))


def _start_domain(ctx: VmContext) -> None:
    ctx.hv.start_domain(ctx.vm_id)


def _mark_running(ctx: VmContext) -> None:
    # RUNNING too: a run that died right after this step finds its own effect.
    move_vm(ctx, (VmStatus.BUILDING, VmStatus.RUNNING), VmStatus.RUNNING, power_state=PowerState.RUNNING)


def _resources(ctx: VmContext) -> dict[str, Any]:
    return {"domain_uuid": str(ctx.vm_id), "pool": ctx.settings.storage_pool, "volume": ctx.volume_name}


CREATE_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", _claim_for_build, undo=_mark_build_failed),
    Step("create_volume", _create_volume, undo=_delete_volume, undo_data=_resources),
    Step(
        "define_domain",
        _define_domain,
        undo=lambda ctx: ctx.hv.undefine_domain(ctx.vm_id),
        undo_data=_resources,
    ),
    Step("start_domain", _start_domain, undo=lambda ctx: ctx.hv.stop_domain(ctx.vm_id), undo_data=_resources),
    Step("mark_running", _mark_running),
]


# --- destroy ---------------------------------------------------------------------------------------
# Nothing in a destroy can be taken back; its only undo marks the VM `error` so DELETE can be retried.


def _claim_for_delete(ctx: VmContext) -> None:
    move_vm(ctx, (VmStatus.DELETING,), VmStatus.DELETING)


def _mark_delete_failed(ctx: VmContext) -> None:
    # A VM that made it to `deleted` stays deleted: its resources are gone, only the task failed late.
    move_vm(ctx, (VmStatus.DELETING, VmStatus.ERROR), VmStatus.ERROR, settled=(VmStatus.DELETED,))


def _delete_console_log(ctx: VmContext) -> None:
    # The path is ours (log dir + the VM's UUID): no user input reaches the file system here.
    with contextlib.suppress(FileNotFoundError):
        os.remove(ctx.console_log)


def _mark_deleted(ctx: VmContext) -> None:
    # A run that died right after this step finds the VM `deleted` already: that is its own effect.
    move_vm(
        ctx,
        (VmStatus.DELETING,),
        VmStatus.DELETED,
        settled=(VmStatus.DELETED,),
        power_state=PowerState.SHUTOFF,
        deleted_at=datetime.now(UTC),
    )


DESTROY_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", _claim_for_delete, undo=_mark_delete_failed),
    Step("stop_domain", lambda ctx: ctx.hv.stop_domain(ctx.vm_id), undo_data=_resources),
    Step("undefine_domain", lambda ctx: ctx.hv.undefine_domain(ctx.vm_id), undo_data=_resources),
    Step("delete_volume", _delete_volume, undo_data=_resources),
    Step("delete_console_log", _delete_console_log),
    Step("mark_deleted", _mark_deleted),
]
