"""The vocabularies of VM, task and saga-step state, shared by the API and the worker."""

from __future__ import annotations

from enum import StrEnum


class VmStatus(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"  # soft-deleted: kept for the task history, invisible to the API


class PowerState(StrEnum):
    RUNNING = "running"
    SHUTOFF = "shutoff"
    PAUSED = "paused"
    CRASHED = "crashed"
    UNKNOWN = "unknown"


class TaskKind(StrEnum):
    CREATE_VM = "create_vm"
    DESTROY_VM = "destroy_vm"
    START_VM = "start_vm"
    STOP_VM = "stop_vm"
    REBOOT_VM = "reboot_vm"
    RECONCILE = "reconcile"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_TASK_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNDOING = "undoing"
    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"


# The states from which a VM may be deleted. `deleting` is there so a failed destroy can be retried.
DELETABLE_VM_STATUSES = (VmStatus.RUNNING, VmStatus.STOPPED, VmStatus.ERROR, VmStatus.DELETING)
