"""usage records: request detail (timing marks, error message, failed attempts)

Revision ID: 0005_request_detail
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_request_detail"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): no table rewrite on either database.
    op.add_column("usage_records", sa.Column("admitted_ms", sa.Float(), nullable=True))
    op.add_column("usage_records", sa.Column("first_byte_ms", sa.Float(), nullable=True))
    op.add_column("usage_records", sa.Column("error_message", sa.String(500), nullable=True))
    op.add_column("usage_records", sa.Column("failures", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("failures")
        batch.drop_column("error_message")
        batch.drop_column("first_byte_ms")
        batch.drop_column("admitted_ms")
