"""audit_entries (action, seq) index: serve's legal-hold watcher asks every few seconds for the
newest `legal_hold.set` entry after the one it saw (runtime/recordings.py); with the index that
is a short range of it, not a scan of the log.

Revision ID: 0028
Revises: 0024
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0028"
down_revision: str | None = "0024"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_audit_entries_action_seq", "audit_entries", ["action", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_action_seq", table_name="audit_entries")
