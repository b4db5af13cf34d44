"""turn_users and relay_sessions

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callgate.storage.models import UTCDateTime

# 64-bit on PostgreSQL, INTEGER (the same DDL as before) on SQLite.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "turn_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("realm", sa.String(255), nullable=False),
        sa.Column("key_hex", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", "realm", name="uq_turn_users_name_realm"),
    )
    op.create_table(
        "relay_sessions",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("allocation_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(513), nullable=False),
        sa.Column("user", sa.String(513), nullable=False),
        sa.Column("client_ip", sa.String(45), nullable=False),
        sa.Column("client_port", sa.Integer(), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("relay_ip", sa.String(45), nullable=False),
        sa.Column("relay_port", sa.Integer(), nullable=False),
        sa.Column("server_ip", sa.String(45), nullable=False),
        sa.Column("server_port", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
        sa.Column("lifetime", sa.Integer(), nullable=False),
        sa.Column("peers", sa.Text(), nullable=False),
        sa.Column("packets_to_peer", sa.BigInteger(), nullable=False),
        sa.Column("bytes_to_peer", sa.BigInteger(), nullable=False),
        sa.Column("packets_to_client", sa.BigInteger(), nullable=False),
        sa.Column("bytes_to_client", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("allocation_id", name="uq_relay_sessions_allocation_id"),
    )
    op.create_index("ix_relay_sessions_user", "relay_sessions", ["user"])
    op.create_index("ix_relay_sessions_started_at", "relay_sessions", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_relay_sessions_started_at", table_name="relay_sessions")
    op.drop_index("ix_relay_sessions_user", table_name="relay_sessions")
    op.drop_table("relay_sessions")
    op.drop_table("turn_users")
