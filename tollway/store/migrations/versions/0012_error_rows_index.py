"""an index of the failed requests' times

Revision ID: 0012_error_rows_index
Revises: 0011_latency_by_key

Totals filtered by status (the explorer's "errors", a class like 5xx, a code like 429) have
no rollup dimension and read raw rows: through `ix_usage_records_ts` that is every request of
the range (seconds for a day at tens of millions of rows). Failed requests are a few per cent
of them, so a partial index of them alone is small and cheap for the usage writer (only failed
rows enter it), and it can hold what those totals read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_error_rows_index"
down_revision = "0011_latency_by_key"
branch_labels = None
depends_on = None


# Covering: the explorer's filters, then every column its totals sum, so a range's failed rows
# are summed from the index alone.
COLUMNS = [
    *("ts", "status", "key_id", "model", "upstream", "error_type"),
    *("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms"),
]


def upgrade() -> None:
    op.create_index(
        "ix_usage_records_errors_ts",
        "usage_records",
        COLUMNS,
        sqlite_where=sa.text("status >= 400"),
        postgresql_where=sa.text("status >= 400"),
    )
    bind = op.get_bind()
    if (
        bind.dialect.name == "sqlite"
        and bind.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).scalar()
    ):
        op.execute("ANALYZE ix_usage_records_errors_ts")  # figures for it, as 0010 gives its own


def downgrade() -> None:
    op.drop_index("ix_usage_records_errors_ts", "usage_records")
