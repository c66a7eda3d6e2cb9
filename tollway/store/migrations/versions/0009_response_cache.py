"""response cache: a key's opt-in, and which usage rows were cache hits

Revision ID: 0009_response_cache
Revises: 0008_anthropic_cache_write
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_response_cache"
down_revision = "0008_anthropic_cache_write"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("response_cache", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(
            sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cache_hit")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("response_cache")
