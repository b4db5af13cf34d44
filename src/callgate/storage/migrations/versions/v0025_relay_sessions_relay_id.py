"""relay_sessions.relay_id: which relay wrote the session (a `callgate turn` process registered in
the cluster, or a node's own relay; docs/scaling.md, "Separate relays"). At start a relay closes
only the sessions it left open itself.

Revision ID: 0025
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("relay_sessions") as batch:
        batch.add_column(sa.Column("relay_id", sa.String(64), nullable=True))
        batch.create_index("ix_relay_sessions_relay_id", ["relay_id"])


def downgrade() -> None:
    with op.batch_alter_table("relay_sessions") as batch:
        batch.drop_index("ix_relay_sessions_relay_id")
        batch.drop_column("relay_id")
