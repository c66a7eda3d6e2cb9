"""alerts: webhooks and the alerts raised (one row per crossing)

Revision ID: 0006_alerts
Revises: 0005_request_detail
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_alerts"
down_revision = "0005_request_detail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_webhooks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url_enc", sa.Text(), nullable=False),
        sa.Column("url_hint", sa.String(length=300), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_webhooks")),
        sa.UniqueConstraint("name", name=op.f("uq_alert_webhooks_name")),
    )
    op.create_table(
        "alert_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("period", sa.String(length=100), nullable=False),
        sa.Column("text", sa.String(length=1000), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
        sa.UniqueConstraint("kind", "subject", "period", name="uq_alert_events_crossing"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_alert_events_subject", "alert_events", ["kind", "subject", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_alert_events_subject", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_table("alert_webhooks")
