"""Drop users.turn_key_hex: an account's TURN key was MD5(handle:realm:password), an unsalted
password equivalent. Accounts now reach the relay only with TURN REST credentials handed out after
sign-in; static relay-only users keep their keys in turn_users. Add storage_probe, the one row
`serve`'s write probe updates (storage/health.py).

Revision ID: 0007
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Overwrite the freed pages instead of leaving the old keys readable in the file.
        op.execute(sa.text("PRAGMA secure_delete = ON"))
    op.execute(sa.text("UPDATE users SET turn_key_hex = NULL"))
    # Plain ALTER TABLE (SQLite >= 3.35 and PostgreSQL): a batch copy of `users` would cascade
    # deletes into api_tokens on SQLite, whose foreign keys are on.
    op.execute(sa.text("ALTER TABLE users DROP COLUMN turn_key_hex"))
    probe = op.create_table(
        "storage_probe",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(probe, [{"id": 1, "written_at": None}])


def downgrade() -> None:
    op.drop_table("storage_probe")
    # The keys cannot come back: accounts use REST credentials until their passwords are set again.
    op.execute(sa.text("ALTER TABLE users ADD COLUMN turn_key_hex VARCHAR(32)"))
