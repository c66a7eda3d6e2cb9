"""rollups count client-side errors apart (the dashboard's client vs upstream split)

Revision ID: 0007_client_errors
Revises: 0006_alerts

Rows written before this revision keep client_errors = 0: their errors all count as
upstream-side (README says so).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_client_errors"
down_revision = "0006_alerts"
branch_labels = None
depends_on = None

TABLES = ("usage_rollups", "usage_rollups_daily")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("client_errors", sa.BigInteger(), nullable=False, server_default="0")
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("client_errors")
