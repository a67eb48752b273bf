"""The destroy saga. Nothing in it can be taken back; its only undo marks the VM `error` so DELETE can
be retried. Every step is idempotent ("no such domain/volume" is success), so destroy also cleans up
half-created VMs."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from typing import Any

from common.lifecycle import VmOp
from common.states import PowerState, VmStatus
from worker.sagas.context import VmContext, move_vm
from worker.sagas.engine import Step


def claim_for_delete(ctx: VmContext) -> None:
    move_vm(ctx, VmOp.CLAIM_DELETE)


def mark_delete_failed(ctx: VmContext, _data: dict[str, Any]) -> None:
    # A VM that made it to `deleted` stays deleted: its resources are gone, only the task failed late.
    move_vm(ctx, VmOp.DELETE_FAILED, settled=(VmStatus.DELETED,))


def stop_domain(ctx: VmContext) -> None:
    ctx.hv.stop_domain(ctx.vm_id)


def undefine_domain(ctx: VmContext) -> None:
    ctx.hv.undefine_domain(ctx.vm_id)


def delete_volume(ctx: VmContext) -> None:
    ctx.hv.delete_volume(ctx.hv.pool(ctx.settings), ctx.volume_name)


def delete_seed(ctx: VmContext) -> None:
    ctx.hv.delete_volume(ctx.hv.pool(ctx.settings), ctx.seed_volume_name)


def delete_console_log(ctx: VmContext) -> None:
    # The path is ours (log dir + the VM's UUID): no user input reaches the file system here.
    with contextlib.suppress(FileNotFoundError):
        os.remove(ctx.console_log)


def mark_deleted(ctx: VmContext) -> None:
    # A run that died right after this step finds the VM `deleted` already: that is its own effect.
    move_vm(
        ctx, VmOp.DELETED, settled=(VmStatus.DELETED,), power_state=PowerState.SHUTOFF,
        deleted_at=datetime.now(UTC),
    )  # fmt: skip


DESTROY_STEPS: list[Step[VmContext]] = [
    Step("claim_vm", claim_for_delete, undo=mark_delete_failed),
    Step("stop_domain", stop_domain),
    Step("undefine_domain", undefine_domain),
    Step("delete_volume", delete_volume),
    Step("delete_seed", delete_seed),
    Step("delete_console_log", delete_console_log),
    Step("mark_deleted", mark_deleted),
]
