"""Deleting an image: refused while a VM that is not deleted is built on it (its disk is an overlay on
the image's volume); otherwise its volume goes, through libvirt, then its row.

The table of VMs is locked against writes (SHARE mode) for the length of the check and the delete, so
a create racing this one either committed first (and is seen, and refuses the delete) or runs after
it and finds no image (400 unknown_image). The volume is deleted before the row's delete commits: if
libvirt fails, the image stays as it was; a volume already gone counts as deleted, so a retry after
any failure finishes the job."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import transaction
from common.models import Image, Project, Vm
from common.states import VmStatus
from worker.hypervisor.connection import Hypervisor
from worker.images.errors import ImageDeleteError

# How many of the VMs that use an image a refusal names.
SHOWN_USERS = 10


def delete_image(hv: Hypervisor, sessions: sessionmaker[Session], settings: Settings, name: str) -> Image:
    """Delete image `name` (its volume and its row); ImageDeleteError when it may not go."""
    with transaction(sessions) as session:
        session.execute(text("LOCK TABLE vms IN SHARE MODE"))
        image = session.scalar(select(Image).where(Image.name == name).with_for_update())
        if image is None:
            raise ImageDeleteError(f"no image named {name} (GET /v1/images lists them)")
        if image.host != settings.host or image.pool != settings.storage_pool:
            raise ImageDeleteError(
                f"image {name} is in pool {image.pool} on host {image.host}; this is pool "
                f"{settings.storage_pool} on host {settings.host}: run the delete on its host"
            )
        _refuse_if_used(session, name)
        session.delete(image)
        session.flush()
        hv.delete_volume(hv.pool(settings), image.volume)  # False (already gone) is success too
    return image


def _refuse_if_used(session: Session, name: str) -> None:
    users = session.execute(
        select(Project.name, Vm.name, Vm.id, Vm.status)
        .join(Project, Project.id == Vm.project_id)
        .where(Vm.image == name, Vm.status != VmStatus.DELETED)
        .order_by(Project.name, Vm.name)
    ).all()
    if not users:
        return
    shown = ", ".join(
        f"{project}/{vm} ({vm_id}, {status})" for project, vm, vm_id, status in users[:SHOWN_USERS]
    )
    more = f" and {len(users) - SHOWN_USERS} more" if len(users) > SHOWN_USERS else ""
    raise ImageDeleteError(
        f"image {name} is used by {len(users)} VM{'s' if len(users) != 1 else ''} that "
        f"{'are' if len(users) != 1 else 'is'} not deleted: {shown}{more}; delete them first "
        "(DELETE /v1/vms/<id>)"
    )
