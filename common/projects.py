"""Projects and their quotas: what a project may use (its limits) and what it uses.

The usage is kept on the project's row, changed only by common/lifecycle.py in the very transactions
that create a VM (one UPDATE that checks the limits and takes the VM's share, or matches nothing) and
that release one (deleted, or its failed create compensated; a flag on the VM makes the release
happen once). A create's UPDATE locks the row, so creates of one project queue behind each other
and re-check the row as the one before left it: no number of concurrent creates passes a limit, and
other projects are not held up. An invariant of the test suite checks the kept usage against a count
of the VMs (`counted_usage`) after every fault it injects."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.models import Project, Vm
from common.states import VmStatus

# A new project's limits unless the admin says otherwise (of the order of OpenStack's defaults).
DEFAULT_LIMITS = {"instances": 10, "vcpus": 20, "memory_mib": 51200, "disk_gib": 1000}
RESOURCES = tuple(DEFAULT_LIMITS)


@dataclass(frozen=True)
class Amounts:
    """An amount of each quota resource: a project's limits, its usage, or one VM's request."""

    instances: int
    vcpus: int
    memory_mib: int
    disk_gib: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def limits_of(project: Project) -> Amounts:
    return Amounts(project.max_instances, project.max_vcpus, project.max_memory_mib, project.max_disk_gib)


def create_project(session: Session, name: str, **limits: int | None) -> Project:
    chosen = {resource: limits.get(resource) for resource in RESOURCES}
    values = {f"max_{r}": DEFAULT_LIMITS[r] if v is None else v for r, v in chosen.items()}
    project = Project(id=uuid.uuid4(), name=name, **values)
    session.add(project)
    session.flush()
    return project


def find_project(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def usage_of(project: Project) -> Amounts:
    return Amounts(project.used_instances, project.used_vcpus, project.used_memory_mib, project.used_disk_gib)


# The VMs whose sizes count in their project's usage.
HOLDS_QUOTA = (Vm.status != VmStatus.DELETED, Vm.holds_quota.is_(True))


def counted_usage(session: Session, project_id: uuid.UUID) -> Amounts:
    """The usage counted from the VMs: what the kept usage must always equal (tests check it)."""
    row = session.execute(
        select(
            func.count(Vm.id), func.coalesce(func.sum(Vm.vcpus), 0),
            func.coalesce(func.sum(Vm.memory_mib), 0), func.coalesce(func.sum(Vm.disk_gib), 0),
        ).where(Vm.project_id == project_id, *HOLDS_QUOTA)
    ).one()  # fmt: skip
    return Amounts(*row)


def first_exceeded(limits: Amounts, used: Amounts, requested: Amounts) -> dict[str, Any] | None:
    """The first resource the request would take past its limit, as QuotaExceeded's details."""
    for resource in RESOURCES:
        limit, in_use, wanted = (getattr(a, resource) for a in (limits, used, requested))
        if in_use + wanted > limit:
            return {"resource": resource, "limit": limit, "in_use": in_use, "requested": wanted}
    return None
