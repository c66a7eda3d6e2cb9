"""usage_records.cache_write_tokens (Anthropic prompt-cache writes)

Revision ID: 0008_anthropic_cache_write
Revises: 0007_client_errors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_anthropic_cache_write"
down_revision = "0007_client_errors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cache_write_tokens")
