"""Write what the hypervisor reports about power into the `vms` rows: one conditional UPDATE for any
number of VMs. Used by the lifecycle-event listener (worker/events.py); the reconciler can use it too."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy import String, column, exists, func, or_, update, values
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import case

from common.db import transaction
from common.models import Task, Vm
from common.states import ACTIVE_TASK_STATUSES, PowerState, VmStatus

# The only statuses that merely say whether a VM is up, so they follow its power. The others belong to a
# task (pending, building, deleting) or wait for an operator (error), and are never changed here.
POWER_FOLLOWING_STATUSES = (VmStatus.RUNNING, VmStatus.STOPPED)


def status_for_power(power_state: PowerState) -> VmStatus | None:
    """The status a running/stopped VM takes for a power state; None keeps its status (a paused VM
    is still up, and `unknown` is no evidence either way)."""
    if power_state == PowerState.RUNNING:
        return VmStatus.RUNNING
    if power_state in (PowerState.SHUTOFF, PowerState.CRASHED):
        return VmStatus.STOPPED
    return None


def apply_power_states(
    sessions: sessionmaker[Session], power_states: Mapping[uuid.UUID, PowerState]
) -> list[uuid.UUID]:
    """Record each VM's power state, and move `running`<->`stopped` with it, in one statement and one
    transaction. A VM with an active task is left alone: it belongs to its task (so the stop/start pair
    of our own reboot never flips it), as are deleted VMs and ids that are no VM. Rows that already
    say so are not rewritten. Returns the ids of the VMs that changed."""
    if not power_states:
        return []
    reported = values(
        column("vm_id", UUID(as_uuid=True)),
        column("power_state", String),
        column("status", String),
        name="reported",
    ).data(
        [(vm_id, str(power), _str_or_none(status_for_power(power))) for vm_id, power in power_states.items()]
    )
    new_status = case(
        (Vm.status.in_(POWER_FOLLOWING_STATUSES), func.coalesce(reported.c.status, Vm.status)),
        else_=Vm.status,
    )
    active_task = exists().where(Task.vm_id == Vm.id, Task.status.in_(ACTIVE_TASK_STATUSES))
    statement = (
        update(Vm)
        .where(
            Vm.id == reported.c.vm_id,
            Vm.status != VmStatus.DELETED,
            ~active_task,
            or_(Vm.power_state != reported.c.power_state, Vm.status != new_status),
        )
        .values(power_state=reported.c.power_state, status=new_status, updated_at=func.now())
        .returning(Vm.id)
        .execution_options(synchronize_session=False)
    )
    with transaction(sessions) as session:
        return list(session.scalars(statement))


def _str_or_none(status: VmStatus | None) -> str | None:
    return None if status is None else str(status)
