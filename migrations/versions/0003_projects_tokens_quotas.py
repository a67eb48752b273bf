"""Projects, API tokens and quotas; VMs, tasks and idempotency keys belong to a project; known hosts.

Rows written before projects existed (an installation upgraded in place) are given to a project
named `default`, created only when there are such rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("max_instances", sa.Integer, nullable=False),
        sa.Column("max_vcpus", sa.Integer, nullable=False),
        sa.Column("max_memory_mib", sa.Integer, nullable=False),
        sa.Column("max_disk_gib", sa.Integer, nullable=False),
        # What the project's VMs that hold quota use: changed only in the transactions that create a VM
        # or release one (common/lifecycle.py), so a create checks and takes its share in one UPDATE.
        *(
            sa.Column(f"used_{resource}", sa.BigInteger, nullable=False, server_default="0")
            for resource in ("instances", "vcpus", "memory_mib", "disk_gib")
        ),
        _timestamp("created_at"),
        sa.CheckConstraint(
            "max_instances >= 0 AND max_vcpus >= 0 AND max_memory_mib >= 0 AND max_disk_gib >= 0",
            name="projects_limits_not_negative",
        ),
        sa.CheckConstraint(
            "used_instances >= 0 AND used_vcpus >= 0 AND used_memory_mib >= 0 AND used_disk_gib >= 0",
            name="projects_usage_not_negative",
        ),
    )
    op.create_table(
        "tokens",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", UUID(as_uuid=True), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        # Only a hash is stored: the secret is shown once, when the token is made.
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        _timestamp("created_at"),
        _timestamp("expires_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.CheckConstraint("role IN ('member','admin')", name="tokens_role_valid"),
    )
    # The hosts whose worker has started at least once: the only queues a request may be sent to.
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(63), primary_key=True),
        _timestamp("first_seen_at"),
        _timestamp("last_seen_at"),
    )

    op.add_column("vms", sa.Column("project_id", UUID(as_uuid=True), nullable=True))
    # False once a failed create has been compensated: its resources no longer count against the quota.
    op.add_column("vms", sa.Column("holds_quota", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("tasks", sa.Column("project_id", UUID(as_uuid=True), nullable=True))
    op.add_column("tasks", sa.Column("requested_by", JSONB, nullable=True))
    op.add_column("idempotency_keys", sa.Column("project_id", UUID(as_uuid=True), nullable=True))
    _adopt_earlier_rows()
    op.alter_column("vms", "project_id", nullable=False)
    op.alter_column("idempotency_keys", "project_id", nullable=False)
    op.create_foreign_key("vms_project_id_fkey", "vms", "projects", ["project_id"], ["id"])
    op.create_foreign_key("tasks_project_id_fkey", "tasks", "projects", ["project_id"], ["id"])
    op.create_foreign_key(
        "idempotency_keys_project_id_fkey", "idempotency_keys", "projects", ["project_id"], ["id"]
    )

    # A key is one project's: two projects may pick the same key without seeing each other's answers.
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["project_id", "key"])

    # VM names are unique per project (the libvirt domain name carries the VM id, so it stays unique).
    op.drop_index("vms_live_name_unique", table_name="vms")
    op.create_index(
        "vms_live_name_unique",
        "vms",
        ["project_id", "name"],
        unique=True,
        postgresql_where=sa.text("status <> 'deleted'"),
    )
    # What a project's listing walks.
    op.create_index(
        "vms_live_by_project",
        "vms",
        ["project_id", "created_at", "id"],
        postgresql_where=sa.text("status <> 'deleted'"),
    )
    op.create_index("tasks_by_project", "tasks", ["project_id", "created_at"])
    # Retention walks finished tasks and deleted VMs by age.
    op.create_index(
        "tasks_finished_at", "tasks", ["finished_at"], postgresql_where=sa.text("finished_at IS NOT NULL")
    )
    op.create_index("vms_deleted_at", "vms", ["deleted_at"], postgresql_where=sa.text("status = 'deleted'"))


def _adopt_earlier_rows() -> None:
    bind = op.get_bind()
    earlier = bind.execute(
        sa.text(
            "SELECT EXISTS (SELECT 1 FROM vms) OR EXISTS (SELECT 1 FROM tasks) "
            "OR EXISTS (SELECT 1 FROM idempotency_keys)"
        )
    ).scalar()
    if not earlier:
        return
    project_id = uuid.uuid4()
    bind.execute(
        sa.text(
            "INSERT INTO projects (id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib) "
            "VALUES (:id, 'default', 1000, 4000, 16777216, 1048576)"
        ),
        {"id": project_id},
    )
    for table in ("vms", "tasks", "idempotency_keys"):
        bind.execute(sa.text(f"UPDATE {table} SET project_id = :id"), {"id": project_id})  # noqa: S608 - fixed table names
    bind.execute(
        sa.text(
            "UPDATE projects SET used_instances = u.n, used_vcpus = u.v, used_memory_mib = u.m, "
            "used_disk_gib = u.d FROM (SELECT count(*) n, coalesce(sum(vcpus), 0) v, "
            "coalesce(sum(memory_mib), 0) m, coalesce(sum(disk_gib), 0) d FROM vms "
            "WHERE status <> 'deleted') u WHERE projects.id = :id"
        ),
        {"id": project_id},
    )


def downgrade() -> None:
    op.drop_index("vms_deleted_at", table_name="vms")
    op.drop_index("tasks_finished_at", table_name="tasks")
    op.drop_index("tasks_by_project", table_name="tasks")
    op.drop_index("vms_live_by_project", table_name="vms")
    op.drop_index("vms_live_name_unique", table_name="vms")
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.drop_column("idempotency_keys", "project_id")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["key"])
    op.drop_column("tasks", "requested_by")
    op.drop_column("tasks", "project_id")
    op.drop_column("vms", "holds_quota")
    op.drop_column("vms", "project_id")
    op.create_index(
        "vms_live_name_unique", "vms", ["name"], unique=True, postgresql_where=sa.text("status <> 'deleted'")
    )
    op.drop_table("hosts")
    op.drop_table("tokens")
    op.drop_table("projects")
