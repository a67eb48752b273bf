"""Task leases and deadlines, idempotency keys, failpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Who runs a task and until when: a worker renews its lease while it works; a lease that ran out
    # means the worker died, and the recovery sweep hands the task to another run.
    op.add_column("tasks", sa.Column("lease_owner", sa.String(255), nullable=True))
    op.add_column("tasks", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "tasks_running_leases", "tasks", ["lease_expires_at"], postgresql_where=sa.text("status = 'running'")
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response", JSONB, nullable=False),
        sa.Column(
            "task_id", UUID(as_uuid=True), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("idempotency_keys_expiry", "idempotency_keys", ["expires_at"])

    # Failure injection for tests, read only by workers started with IAAS_FAILPOINTS_TABLE=true.
    op.create_table(
        "failpoints",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("hits", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_task_id", UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("action IN ('raise', 'pause')", name="failpoints_action_valid"),
    )


def downgrade() -> None:
    op.drop_table("failpoints")
    op.drop_table("idempotency_keys")
    op.drop_index("tasks_running_leases", table_name="tasks")
    op.drop_column("tasks", "deadline_at")
    op.drop_column("tasks", "lease_expires_at")
    op.drop_column("tasks", "lease_owner")
