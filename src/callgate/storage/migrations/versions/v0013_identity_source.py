"""users.source (local | ldap | oidc), users.external_id (the directory's stable id) and
users.email, for accounts signed in through a directory (callgate.identity, docs/identity.md)

Revision ID: 0013
Revises: 0009 (ids were pre-assigned per branch; the chain is 0006, 0010, 0007, 0009, 0013)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="local"))
        batch.add_column(sa.Column("external_id", sa.String(512), nullable=True))
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
        batch.create_unique_constraint("uq_users_source_external_id", ["source", "external_id"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_source_external_id", type_="unique")
        batch.drop_column("email")
        batch.drop_column("external_id")
        batch.drop_column("source")
