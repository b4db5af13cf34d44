"""scim_users, scim_groups, scim_members: users and groups provisioned over SCIM 2.0
(callgate.identity, docs/identity.md)

Revision ID: 0018
Revises: 0013 (ids are pre-assigned per branch; the lead re-chains them at merge)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callgate.storage.models import UTCDateTime

revision = "0018"
down_revision: str | None = "0017"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "scim_users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("user_name_key", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_scim_users_user_id", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("user_name_key", name="uq_scim_users_user_name_key"),
        sa.UniqueConstraint("user_id", name="uq_scim_users_user_id"),
    )
    op.create_table(
        "scim_groups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("display_name_key", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("display_name_key", name="uq_scim_groups_display_name_key"),
    )
    op.create_table(
        "scim_members",
        sa.Column("group_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.ForeignKeyConstraint(
            ["group_id"], ["scim_groups.id"], name="fk_scim_members_group_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["scim_users.id"], name="fk_scim_members_user_id", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_scim_members_user_id", "scim_members", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_scim_members_user_id", table_name="scim_members")
    op.drop_table("scim_members")
    op.drop_table("scim_groups")
    op.drop_table("scim_users")
