"""sip_credentials: digest credentials of SIP devices (callgate.sip, docs/sip.md)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0018"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sip_credentials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_sip_credentials_user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("realm", sa.String(255), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("username", name="uq_sip_credentials_username"),
    )
    op.create_index("ix_sip_credentials_user_id", "sip_credentials", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_sip_credentials_user_id", table_name="sip_credentials")
    op.drop_table("sip_credentials")
