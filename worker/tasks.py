"""Celery tasks. Thin on purpose: they take ids and hand over to the task runner. A failed task raises
TaskFailed after its failure is recorded: Celery then marks it FAILURE (declared in `throws`, so it is
logged without a traceback), acknowledges it and never retries it."""

from __future__ import annotations

import uuid
from typing import Any

from celery import current_app, shared_task

from common import sweeps
from common.queue import REMOVE_NETWORK, SWEEP, TASK_NAMES
from common.states import TaskKind
from worker import guest_networks, resources
from worker.hypervisor import network_xml
from worker.sagas.create import CREATE_STEPS
from worker.sagas.destroy import DESTROY_STEPS
from worker.sagas.power import REBOOT_STEPS, START_STEPS, STOP_STEPS
from worker.sagas.runner import TaskFailed, run_reconcile_task, run_vm_task


@shared_task(name=TASK_NAMES[TaskKind.CREATE_VM], throws=(TaskFailed,))
def create_vm(task_id: str) -> None:
    run_vm_task(uuid.UUID(task_id), TaskKind.CREATE_VM, CREATE_STEPS)


@shared_task(name=TASK_NAMES[TaskKind.DESTROY_VM], throws=(TaskFailed,))
def destroy_vm(task_id: str) -> None:
    run_vm_task(uuid.UUID(task_id), TaskKind.DESTROY_VM, DESTROY_STEPS)


@shared_task(name=TASK_NAMES[TaskKind.START_VM], throws=(TaskFailed,))
def start_vm(task_id: str) -> None:
    run_vm_task(uuid.UUID(task_id), TaskKind.START_VM, START_STEPS)


@shared_task(name=TASK_NAMES[TaskKind.STOP_VM], throws=(TaskFailed,))
def stop_vm(task_id: str) -> None:
    run_vm_task(uuid.UUID(task_id), TaskKind.STOP_VM, STOP_STEPS)


@shared_task(name=TASK_NAMES[TaskKind.REBOOT_VM], throws=(TaskFailed,))
def reboot_vm(task_id: str) -> None:
    run_vm_task(uuid.UUID(task_id), TaskKind.REBOOT_VM, REBOOT_STEPS)


@shared_task(name=TASK_NAMES[TaskKind.RECONCILE], throws=(TaskFailed,))
def reconcile(task_id: str | None = None) -> None:
    """Compare this host's libvirt with the database and repair as configured."""
    run_reconcile_task(uuid.UUID(task_id) if task_id else None)


@shared_task(name=SWEEP)
def sweep() -> dict[str, Any]:
    """Lease recovery, outbox re-send and key expiry, for every host."""
    return sweeps.sweep(current_app, resources.sessions(), resources.settings())


@shared_task(name=REMOVE_NETWORK)
def remove_network(network_id: str) -> dict[str, Any]:
    """A project network was deleted: remove this host's libvirt network for it. Nothing can be on it
    (the API refuses to delete a network with NICs); a lost message leaves an `orphan_network` for
    reconciliation."""
    settings = resources.settings()
    name = network_xml.network_name(settings.host, uuid.UUID(network_id))
    removed = guest_networks.remove_unused_networks(resources.hypervisor(), resources.sessions(), [name])
    return {"network": name, "removed": bool(removed)}
