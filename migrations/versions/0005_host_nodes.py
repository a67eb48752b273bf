"""Each host's worker node name, so the API can ask that worker alone (GET /v1/vms/<id>/console).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
# TODO(merge): "0004" (flavors and keypairs) is written in parallel on another branch; until it is
# merged this revision follows "0003". Re-point it to "0004" when both are on one branch.
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The Celery node name (`worker@host`) of the host's worker, set each time one starts; NULL for a
    # host whose worker last started before this revision.
    op.add_column("hosts", sa.Column("node", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("hosts", "node")
