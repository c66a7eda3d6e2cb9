"""daily usage rollups

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SUMS = (
    "sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens),"
    " sum(total_tokens), sum(cost_usd), sum(latency_ms_sum)"
)


def upgrade() -> None:
    op.create_table(
        "usage_rollups_daily",
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("upstream", sa.String(length=200), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.UniqueConstraint(
            "day", "key_id", "model", "upstream", "endpoint", name="uq_usage_rollups_daily"
        ),
    )
    with op.batch_alter_table("usage_rollups_daily", schema=None) as batch_op:
        batch_op.create_index("ix_usage_rollups_daily_key_day", ["key_id", "day"], unique=False)

    # Backfill from the hourly rollups (UTC days; SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff").
    if op.get_bind().dialect.name == "postgresql":
        day = "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:
        day = "substr(hour, 1, 10) || ' 00:00:00.000000'"
    op.execute(
        "INSERT INTO usage_rollups_daily (day, key_id, model, upstream, endpoint, requests,"
        " errors, prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms_sum)"
        f" SELECT {day}, key_id, model, upstream, endpoint, {_SUMS} FROM usage_rollups"
        f" GROUP BY {day}, key_id, model, upstream, endpoint"
    )


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups_daily", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_rollups_daily_key_day")
    op.drop_table("usage_rollups_daily")
