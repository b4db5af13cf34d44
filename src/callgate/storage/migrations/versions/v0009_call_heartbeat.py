"""calls.last_alive_at: the last heartbeat of a call in progress, so the next start after a crash
ends its record within a few seconds of the truth

Revision ID: 0009
Revises: 0007 (ids were pre-assigned per branch; the chain is 0006, 0010, 0007, 0009, 0013)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callgate.storage.models import UTCDateTime

revision = "0009"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("last_alive_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("last_alive_at")
