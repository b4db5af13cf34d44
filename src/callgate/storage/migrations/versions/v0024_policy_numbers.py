"""policy_rules: direction and number patterns, for calls with the phone network (docs/sip.md,
"Policy for numbers")

Revision ID: 0024
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision: str | None = "0022"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("policy_rules") as batch:
        batch.add_column(sa.Column("direction", sa.String(8), nullable=False, server_default="any"))
        batch.add_column(sa.Column("caller_number", sa.String(16), nullable=True))
        batch.add_column(sa.Column("callee_number", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy_rules") as batch:
        batch.drop_column("callee_number")
        batch.drop_column("caller_number")
        batch.drop_column("direction")
