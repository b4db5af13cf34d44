"""detect_findings_version: one counter row bumped in the same transaction as every write to
detect_findings (added, grown, deleted), so the console's long polls read the table's version in
O(1) instead of summing the whole table once a second per node (docs/detection.md).

Revision ID: 0035
Revises: 0030
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision: str | None = "0030"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    table = op.create_table(
        "detect_findings_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.bulk_insert(table, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("detect_findings_version")
