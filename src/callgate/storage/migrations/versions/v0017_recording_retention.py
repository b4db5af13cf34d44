"""recordings: retention (retain_until), legal hold (legal_hold, hold_reason) and the WORM
archive copy (archive_bucket, archive_key, archive_versions, archived_at); docs/recording.md,
"Retention and legal hold" and "WORM archive"

Revision ID: 0017
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision: str | None = "0019"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        # NULL: made before retention existed; `callgate serve` assigns it from the
        # configuration at start (recording/retention.py, assign_missing).
        batch.add_column(sa.Column("retain_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("hold_reason", sa.String(255), nullable=True))
        batch.add_column(sa.Column("archive_bucket", sa.String(63), nullable=True))
        batch.add_column(sa.Column("archive_key", sa.String(512), nullable=True))
        batch.add_column(sa.Column("archive_versions", sa.Text(), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_recordings_retain_until", "recordings", ["retain_until"])


def downgrade() -> None:
    op.drop_index("ix_recordings_retain_until", table_name="recordings")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("archive_versions")
        batch.drop_column("archive_key")
        batch.drop_column("archive_bucket")
        batch.drop_column("hold_reason")
        batch.drop_column("legal_hold")
        batch.drop_column("retain_until")
