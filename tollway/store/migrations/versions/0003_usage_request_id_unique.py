"""usage request ids unique

Revision ID: 0003
Revises: 0002

The usage writer inserts idempotently (ON CONFLICT (request_id) DO NOTHING), so a replayed or
retried event is never counted twice. Rows already duplicated by the old writer (a batch
committed just before its answer was lost) keep their place in the rollups, which counted them:
the later copies get their row id appended to the request id instead of being deleted, so raw
rows and rollups still agree.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE usage_records SET request_id = request_id || '~' || CAST(id AS VARCHAR(20))"
        " WHERE id NOT IN (SELECT min(id) FROM usage_records GROUP BY request_id)"
    )
    op.create_index("uq_usage_records_request_id", "usage_records", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_usage_records_request_id", table_name="usage_records")
