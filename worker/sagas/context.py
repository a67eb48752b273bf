"""What every VM saga step works with: the VM's facts, the settings, the hypervisor, and the database
(through the state machines of common/lifecycle.py only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common import lifecycle
from common.config import Settings
from common.db import in_transaction
from common.lifecycle import VmOp
from common.models import Image, Network, Nic, Vm
from common.states import VmStatus
from worker import console, guest_networks
from worker.hypervisor import domain_xml, network_xml
from worker.hypervisor.connection import Hypervisor

GIB = 1024**3


@dataclass(frozen=True)
class NicView:
    """A VM's interface as the create's transaction allocated it."""

    network_id: uuid.UUID
    mac: str
    ip: str
    prefix: int


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
    nics: tuple[NicView, ...] = ()
    user_data: str | None = None
    public_key: str | None = None

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
        nics = session.execute(
            select(Nic.network_id, Nic.mac, Nic.ip, Network.cidr)
            .join(Network, Network.id == Nic.network_id)
            .where(Nic.vm_id == vm.id)
            .order_by(Nic.position)
        ).all()
        return cls(
            vm.id, vm.name, vm.image, image.path, vm.vcpus, vm.memory_mib, vm.disk_gib,
            settings, hv, sessions, dict(options or {}),
            tuple(NicView(n.network_id, str(n.mac), str(n.ip), int(str(n.cidr).split("/")[1])) for n in nics),
            vm.user_data, vm.public_key,
        )  # fmt: skip

    @property
    def volume_name(self) -> str:
        return domain_xml.vm_volume_name(self.vm_id)

    @property
    def seed_volume_name(self) -> str:
        return domain_xml.seed_volume_name(self.vm_id)

    @property
    def network_names(self) -> list[str]:
        """This host's libvirt networks for the VM's NICs, in NIC order."""
        return [network_xml.network_name(self.settings.host, nic.network_id) for nic in self.nics]

    @property
    def console_log(self) -> str:
        return console.log_path(self.settings, self.vm_id)

    def resources(self) -> dict[str, Any]:
        """What the hypervisor holds for this VM, by name: recorded before a step acts, for its undo."""
        return {
            "domain_uuid": str(self.vm_id),
            "pool": self.settings.storage_pool,
            "volume": self.volume_name,
            "seed_volume": self.seed_volume_name,
            "networks": self.network_names,
        }


def move_vm(ctx: VmContext, op: VmOp, *, settled: tuple[VmStatus, ...] = (), **values: Any) -> None:
    """A VM state change (compare-and-set, by the op's row of the table), retried through an outage."""
    in_transaction(
        ctx.sessions,
        ctx.settings.db_retry_s,
        lambda session: lifecycle.move_vm(session, ctx.vm_id, op, settled=settled, **values),
    )


def vm_status(ctx: VmContext) -> str | None:
    return in_transaction(
        ctx.sessions,
        ctx.settings.db_retry_s,
        lambda session: session.scalar(select(Vm.status).where(Vm.id == ctx.vm_id)),
    )


def domain_of(data: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(data["domain_uuid"])


def delete_recorded_volume(ctx: VmContext, data: dict[str, Any]) -> None:
    """Delete the volume a step recorded (pool and name), whatever the settings say now."""
    pool = ctx.hv.ensure_pool(data["pool"], ctx.settings.storage_pool_path)
    ctx.hv.delete_volume(pool, data["volume"])


def delete_recorded_seed(ctx: VmContext, data: dict[str, Any]) -> None:
    pool = ctx.hv.ensure_pool(data["pool"], ctx.settings.storage_pool_path)
    if data.get("seed_volume"):  # absent from journals written before VMs had seeds
        ctx.hv.delete_volume(pool, data["seed_volume"])


def remove_recorded_networks(ctx: VmContext, data: dict[str, Any]) -> None:
    """Remove the networks the step made sure of, unless another VM on this host is on them."""
    guest_networks.remove_unused_networks(ctx.hv, ctx.sessions, data.get("networks", []))


def start_with_networks(ctx: VmContext) -> None:
    """Start the domain with its networks present (see guest_networks.ensure_networks)."""
    guest_networks.ensure_networks(
        ctx.hv, ctx.sessions, ctx.network_names, then=lambda: ctx.hv.start_domain(ctx.vm_id)
    )


def undefine_recorded_domain(ctx: VmContext, data: dict[str, Any]) -> None:
    ctx.hv.undefine_domain(domain_of(data))


def stop_recorded_domain(ctx: VmContext, data: dict[str, Any]) -> None:
    ctx.hv.stop_domain(domain_of(data))
