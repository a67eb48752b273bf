"""Projects and their quotas: what a project may use (its limits) and what it uses (its live VMs).

Usage is never stored as a counter that could drift: it is counted from the VMs that hold quota
(every VM not deleted, except a failed create that was compensated). A create locks its project's
row first (`lock_limits`), so creates of one project count and insert one after another, and no
number of concurrent creates can pass a limit; other projects are not held up."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
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


# The VMs that count against their project's quota.
HOLDS_QUOTA = (Vm.status != VmStatus.DELETED, Vm.holds_quota.is_(True))

_USAGE = select(
    func.count(Vm.id), func.coalesce(func.sum(Vm.vcpus), 0), func.coalesce(func.sum(Vm.memory_mib), 0),
    func.coalesce(func.sum(Vm.disk_gib), 0),
).where(Vm.project_id == bindparam("project_id"), *HOLDS_QUOTA)  # fmt: skip


def usage(session: Session, project_id: uuid.UUID) -> Amounts:
    return Amounts(*session.execute(_USAGE, {"project_id": project_id}).one())


_LOCK = (
    select(Project.max_instances, Project.max_vcpus, Project.max_memory_mib, Project.max_disk_gib)
    .where(Project.id == bindparam("project_id"))
    .with_for_update()
)


def lock_limits(session: Session, project_id: uuid.UUID) -> Amounts:
    """Lock the project's row until the transaction ends and return its limits. The statements
    that follow in this transaction see every create that committed before the lock was granted."""
    return Amounts(*session.execute(_LOCK, {"project_id": project_id}).one())


def first_exceeded(limits: Amounts, used: Amounts, requested: Amounts) -> dict[str, Any] | None:
    """The first resource the request would take past its limit, as QuotaExceeded's details."""
    for resource in RESOURCES:
        limit, in_use, wanted = (getattr(a, resource) for a in (limits, used, requested))
        if in_use + wanted > limit:
            return {"resource": resource, "limit": limit, "in_use": in_use, "requested": wanted}
    return None
