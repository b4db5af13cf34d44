"""groups (with per-group TURN settings), policy_rules (ordered allow/deny rules),
policy_settings (default action, time zone, change version) and calls.recording_required

Group membership stays in users.groups (a JSON array of names): accounts keep working unchanged,
and a group row adds a description and TURN settings to a name. policy_settings has exactly one
row (id 1); its `version` grows with every policy change so that each signaling process notices a
change with one cheap query.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callgate.storage.models import UTCDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("turn_max_allocations", sa.Integer(), nullable=True),
        sa.Column("turn_max_kbps", sa.Integer(), nullable=True),
        # JSON array of CIDR strings (Text keeps it portable).
        sa.Column("turn_peer_ranges", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_table(
        "policy_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("caller_user", sa.String(64), nullable=True),
        sa.Column("caller_group", sa.String(64), nullable=True),
        sa.Column("callee_user", sa.String(64), nullable=True),
        sa.Column("callee_group", sa.String(64), nullable=True),
        sa.Column("days", sa.String(16), nullable=True),  # "0,1,2,3,4" (0 = Monday)
        sa.Column("window_start", sa.String(5), nullable=True),  # "HH:MM"
        sa.Column("window_end", sa.String(5), nullable=True),
        sa.Column("wall", sa.Boolean(), nullable=False),
        sa.Column("relay_only", sa.Boolean(), nullable=False),
        sa.Column("max_duration_s", sa.Integer(), nullable=True),
        sa.Column("recording_required", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_policy_rules_name"),
    )
    op.create_index("ix_policy_rules_position", "policy_rules", ["position"])
    settings = op.create_table(
        "policy_settings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("default_action", sa.String(8), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
    )
    op.bulk_insert(
        settings,
        [
            {
                "id": 1,
                "default_action": "allow",
                "time_zone": "UTC",
                "version": 1,
                "updated_at": None,
            }
        ],
    )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recording_required", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recording_required")
    op.drop_table("policy_settings")
    op.drop_index("ix_policy_rules_position", table_name="policy_rules")
    op.drop_table("policy_rules")
    op.drop_table("groups")
