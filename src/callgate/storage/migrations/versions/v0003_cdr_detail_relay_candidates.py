"""calls.end_detail (why, in the party's or the policy's words) and calls.relay_candidates (the
relayed addresses the call's SDPs offered, to link relay sessions exactly)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("end_detail", sa.String(255), nullable=True))
        batch.add_column(sa.Column("relay_candidates", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("relay_candidates")
        batch.drop_column("end_detail")
