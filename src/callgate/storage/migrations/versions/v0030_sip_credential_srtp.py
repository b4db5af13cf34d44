"""sip_credentials.srtp: the device must be called with SRTP (SDES keys, RFC 4568): the edge's
INVITEs to it offer RTP/SAVP only, and a plain RTP answer ends the call (docs/sip.md, "SRTP
towards phones").

Revision ID: 0030
Revises: 0028
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision: str | None = "0028"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sip_credentials") as batch:
        batch.add_column(sa.Column("srtp", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sip_credentials") as batch:
        batch.drop_column("srtp")
