"""Initial schema: images, vms, tasks, task_steps.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VM_STATUSES = "('pending','building','running','stopped','error','deleting','deleted')"
POWER_STATES = "('running','shutoff','paused','crashed','unknown')"
TASK_STATUSES = "('pending','running','succeeded','failed')"
STEP_STATUSES = "('running','succeeded','failed','undoing','undone','undo_failed')"


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("host", sa.String(63), nullable=False),
        sa.Column("pool", sa.String(255), nullable=False),
        sa.Column("volume", sa.String(255), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("virtual_size_bytes", sa.BigInteger, nullable=False),
        sa.Column("checksum_sha256", sa.String(64), nullable=False),
        _timestamp("created_at"),
    )
    op.create_table(
        "vms",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("image", sa.String(63), sa.ForeignKey("images.name"), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("power_state", sa.String(16), nullable=False),
        sa.Column("host", sa.String(63), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("deleted_at", nullable=True),
        sa.CheckConstraint(f"status IN {VM_STATUSES}", name="vms_status_valid"),
        sa.CheckConstraint(f"power_state IN {POWER_STATES}", name="vms_power_state_valid"),
        sa.CheckConstraint("vcpus > 0 AND memory_mib > 0 AND disk_gib > 0", name="vms_sizes_positive"),
    )
    # Names are unique among live VMs only: a deleted VM's name can be used again.
    op.create_index(
        "vms_live_name_unique", "vms", ["name"], unique=True, postgresql_where=sa.text("status <> 'deleted'")
    )
    # Keyset pagination walks (created_at, id) of live VMs.
    op.create_index(
        "vms_live_created_id", "vms", ["created_at", "id"], postgresql_where=sa.text("status <> 'deleted'")
    )
    op.create_table(
        "tasks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("vm_id", UUID(as_uuid=True), sa.ForeignKey("vms.id"), nullable=True),
        sa.Column("host", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("result", JSONB, nullable=True),
        sa.Column("error", JSONB, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _timestamp("created_at"),
        _timestamp("queued_at", nullable=True),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("updated_at"),
        sa.CheckConstraint(f"status IN {TASK_STATUSES}", name="tasks_status_valid"),
    )
    # At most one unfinished task per VM, enforced by PostgreSQL rather than by a read-then-write race.
    op.create_index(
        "tasks_one_active_per_vm",
        "tasks",
        ["vm_id"],
        unique=True,
        postgresql_where=sa.text("vm_id IS NOT NULL AND status IN ('pending','running')"),
    )
    # The sweep that re-sends committed-but-unqueued tasks looks only at unfinished ones.
    op.create_index(
        "tasks_unfinished",
        "tasks",
        ["status", "created_at"],
        postgresql_where=sa.text("status IN ('pending','running')"),
    )
    op.create_table(
        "task_steps",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "task_id", UUID(as_uuid=True), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("undo_data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("undo_error", sa.Text, nullable=True),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.UniqueConstraint("task_id", "seq", name="task_steps_task_seq_unique"),
        sa.CheckConstraint(f"status IN {STEP_STATUSES}", name="task_steps_status_valid"),
    )


def downgrade() -> None:
    op.drop_table("task_steps")
    op.drop_table("tasks")
    op.drop_table("vms")
    op.drop_table("images")
