"""Networks and addresses (IPAM in PostgreSQL) and what a VM's first boot is configured with.

- `networks`: a project's IPv4 network (prefix /16 to /29). Each host makes it an isolated libvirt
  network when a VM there first needs it (worker/hypervisor/networks.py).
- `nics`: a VM's interfaces. A row holds its address: it is written in the create's transaction and
  deleted when the VM stops holding quota (deleted, create cancelled or compensated), so the address
  goes back to the pool exactly when the VM's resources do. `(network_id, ip)` is unique, so two
  creates can never share an address even if allocation had a bug; MACs are unique everywhere.
- `vms.user_data`, `vms.key_name`, `vms.public_key`: copied at create (the keypair may be deleted later
  and the VM keeps the key it booted with, as in Nova), read by the worker to build the NoCloud seed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import CIDR, INET, MACADDR, UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", UUID(as_uuid=True), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("cidr", CIDR, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("project_id", "name", name="networks_project_name_unique"),
        sa.CheckConstraint(
            "family(cidr) = 4 AND masklen(cidr) BETWEEN 16 AND 29", name="networks_cidr_ipv4_16_to_29"
        ),
    )
    op.create_table(
        "nics",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("vm_id", UUID(as_uuid=True), sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("network_id", UUID(as_uuid=True), sa.ForeignKey("networks.id"), nullable=False),
        # The interface's place on the VM (eth0, eth1, ...), in the order the request named networks.
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("mac", MACADDR, nullable=False),
        sa.Column("ip", INET, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("vm_id", "position", name="nics_vm_position_unique"),
        sa.UniqueConstraint("network_id", "ip", name="nics_network_ip_unique"),
        sa.UniqueConstraint("mac", name="nics_mac_unique"),
    )
    op.create_index("nics_network_id", "nics", ["network_id"])
    op.add_column("vms", sa.Column("user_data", sa.Text, nullable=True))
    op.add_column("vms", sa.Column("key_name", sa.String(63), nullable=True))
    op.add_column("vms", sa.Column("public_key", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("vms", "public_key")
    op.drop_column("vms", "key_name")
    op.drop_column("vms", "user_data")
    op.drop_index("nics_network_id", table_name="nics")
    op.drop_table("nics")
    op.drop_table("networks")
