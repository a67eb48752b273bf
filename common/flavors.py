"""Flavors: named VM sizes, shared by every project (like images). An admin makes them on the host
(`iaas-admin flavor create`); `POST /v1/vms` takes one instead of the three sizes.

The bounds of each size live here, so the API's request schema and the admin command agree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.models import Flavor

# (least, most) of each size a VM may have.
SIZE_BOUNDS: Mapping[str, tuple[int, int]] = {
    "vcpus": (1, 64),
    "memory_mib": (64, 512 * 1024),
    "disk_gib": (1, 16 * 1024),
}


def create_flavor(session: Session, name: str, *, vcpus: int, memory_mib: int, disk_gib: int) -> Flavor:
    """Add a flavor (flushed; the caller commits). Its name and sizes are checked by the caller."""
    flavor = Flavor(name=name, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib)
    session.add(flavor)
    session.flush()
    return flavor


def all_flavors(session: Session) -> Sequence[Flavor]:
    return session.scalars(select(Flavor).order_by(Flavor.vcpus, Flavor.memory_mib, Flavor.name)).all()
