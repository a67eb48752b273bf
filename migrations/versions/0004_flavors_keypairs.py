"""Flavors (named VM sizes, shared by every project) and keypairs (a project's SSH public keys);
images can be deleted.

A VM's `image` no longer references `images.name`: an image may go once no VM that is not deleted
uses it, while deleted VMs (kept for their history until retention purges them) still name it.
`iaas-admin image delete` does the check, with the table of VMs locked against a racing create
(worker/images/deleter.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flavors",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("vcpus >= 1 AND memory_mib >= 1 AND disk_gib >= 1", name="flavors_sizes_positive"),
    )
    op.create_table(
        "keypairs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", UUID(as_uuid=True), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        # OpenSSH's form: SHA256:<unpadded base64 of the SHA-256 of the key blob>.
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("project_id", "name", name="keypairs_project_name_unique"),
    )

    op.drop_constraint("vms_image_fkey", "vms", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key("vms_image_fkey", "vms", "images", ["image"], ["name"])
    op.drop_table("keypairs")
    op.drop_table("flavors")
