"""recordings: archive_hold, the S3 legal hold the archive server confirmed on a recording's
archived versions (docs/recording.md, "WORM archive")

Revision ID: 0022
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision: str | None = "0025"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(
            sa.Column("archive_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("archive_hold")
