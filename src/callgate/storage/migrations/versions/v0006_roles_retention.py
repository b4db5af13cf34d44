"""users.role (admin | compliance | user; is_admin=true becomes admin), legal-hold flags on users
and calls, calls.ended_by wide enough for "admin:<handle>", retention_settings (days per record
class)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="user"))
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        sa.text("UPDATE users SET role = 'admin' WHERE is_admin = :yes").bindparams(yes=True)
    )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        op.alter_column(
            "calls", "ended_by", type_=sa.String(80), existing_type=sa.String(16), nullable=True
        )
    op.create_table(
        "retention_settings",
        sa.Column("record_class", sa.String(16), primary_key=True),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Retention and the purge job look calls up by end time and quality rows by report time.
    op.create_index("ix_calls_end_at", "calls", ["end_at"])
    op.create_index("ix_call_quality_reported_at", "call_quality", ["reported_at"])


def downgrade() -> None:
    op.drop_index("ix_call_quality_reported_at", table_name="call_quality")
    op.drop_index("ix_calls_end_at", table_name="calls")
    op.drop_table("retention_settings")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "calls", "ended_by", type_=sa.String(16), existing_type=sa.String(80), nullable=True
        )
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("legal_hold")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("legal_hold")
        batch.drop_column("role")
