"""users, api_tokens, calls (CDR) and call_quality

`turn_users` stays: static TURN-only credentials (no sign-in) keep working next to accounts, whose
own TURN key lives in `users.turn_key_hex`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callgate.storage.models import UTCDateTime

# 64-bit on PostgreSQL, INTEGER (the same DDL as before) on SQLite.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("handle", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("realm", sa.String(255), nullable=False),
        sa.Column("turn_key_hex", sa.String(32), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("handle", name="uq_users_handle"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_api_tokens_user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    _create_calls()
    op.create_table(
        "call_quality",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("reporter", sa.String(8), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("packets", sa.BigInteger(), nullable=False),
        sa.Column("packets_lost", sa.BigInteger(), nullable=False),
        sa.Column("loss_rate", sa.Float(), nullable=False),
        sa.Column("jitter_ms", sa.Float(), nullable=True),
        sa.Column("rtt_ms", sa.Float(), nullable=True),
        sa.Column("concealed_ratio", sa.Float(), nullable=True),
        sa.Column("mos", sa.Float(), nullable=False),
        sa.Column("classification", sa.String(8), nullable=False),
        sa.Column("poor_reasons", sa.Text(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.UniqueConstraint(
            "call_id", "reporter", "direction", "kind", name="uq_call_quality_stream"
        ),
    )
    op.create_index("ix_call_quality_call_id", "call_quality", ["call_id"])


def _create_calls() -> None:
    text = sa.String
    op.create_table(
        "calls",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("call_id", text(32), nullable=False),
        sa.Column("caller_user", text(64), nullable=False),
        sa.Column("caller_device", text(64), nullable=True),
        sa.Column("caller_address", text(64), nullable=True),
        sa.Column("caller_user_agent", text(255), nullable=True),
        sa.Column("callee_user", text(255), nullable=False),
        sa.Column("callee_device", text(64), nullable=True),
        sa.Column("callee_address", text(64), nullable=True),
        sa.Column("callee_user_agent", text(255), nullable=True),
        sa.Column("direction", text(16), nullable=False),
        sa.Column("invite_at", UTCDateTime(), nullable=False),
        sa.Column("ring_at", UTCDateTime(), nullable=True),
        sa.Column("answer_at", UTCDateTime(), nullable=True),
        sa.Column("end_at", UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("disposition", text(16), nullable=True),
        sa.Column("ended_by", text(16), nullable=True),
        sa.Column("reason", text(64), nullable=True),
        sa.Column("policy_rule", text(255), nullable=True),
        sa.Column("policy_decision", text(16), nullable=True),
        sa.Column("media_path", text(32), nullable=True),
        sa.Column("relay_used", text(255), nullable=True),
        sa.Column("relay_bytes", sa.BigInteger(), nullable=True),
        sa.Column("relay_allocation_ids", sa.Text(), nullable=True),
        sa.Column("codec", text(64), nullable=True),
        sa.Column("encryption", text(16), nullable=True),
        sa.Column("recording_ids", sa.Text(), nullable=True),
        sa.Column("node_id", text(64), nullable=True),
        sa.Column("audit_index", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("call_id", name="uq_calls_call_id"),
    )
    op.create_index("ix_calls_invite_at", "calls", ["invite_at"])
    op.create_index("ix_calls_caller_user_invite_at", "calls", ["caller_user", "invite_at"])
    op.create_index("ix_calls_callee_user_invite_at", "calls", ["callee_user", "invite_at"])


def downgrade() -> None:
    op.drop_index("ix_call_quality_call_id", table_name="call_quality")
    op.drop_table("call_quality")
    op.drop_index("ix_calls_callee_user_invite_at", table_name="calls")
    op.drop_index("ix_calls_caller_user_invite_at", table_name="calls")
    op.drop_index("ix_calls_invite_at", table_name="calls")
    op.drop_table("calls")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
