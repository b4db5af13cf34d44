"""detect_findings: what the monitor inside `serve` found (one row per internal host, application,
peer and sanctioned-or-not; docs/detection.md)

Revision ID: 0019
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "detect_findings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("host", sa.String(45), nullable=False),
        sa.Column("app", sa.String(128), nullable=False),
        sa.Column("peer", sa.String(45), nullable=False),
        sa.Column("sanctioned", sa.Boolean(), nullable=False),
        sa.Column("interface", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("packets_out", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("packets_in", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("confidence", sa.Float(), nullable=False, server_default="0"),
        sa.Column("path", sa.String(16), nullable=False),
        sa.Column("protocols", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False, server_default="[]"),
        sa.UniqueConstraint("host", "app", "peer", "sanctioned", name="uq_detect_findings_key"),
    )
    op.create_index("ix_detect_findings_last_seen", "detect_findings", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_detect_findings_last_seen", table_name="detect_findings")
    op.drop_table("detect_findings")
