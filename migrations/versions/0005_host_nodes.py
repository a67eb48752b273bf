"""Each host's worker node name, so the API can ask that worker alone (GET /v1/vms/<id>/console).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The Celery node name (`worker@host`) of the host's worker, set each time one starts; NULL for a
    # host whose worker last started before this revision.
    op.add_column("hosts", sa.Column("node", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("hosts", "node")
