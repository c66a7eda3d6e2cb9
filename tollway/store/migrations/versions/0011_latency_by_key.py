"""latency histograms per key and per model and upstream together

Revision ID: 0011_latency_by_key
Revises: 0010_usage_cube

The dashboard's p50/p95 for one key, or for a model and an upstream together, read raw rows
(seconds at millions of rows). The histograms gain a key column and the two shapes; they are
rebuilt from the raw rows in one grouped scan (minutes on a large usage table, as 0010).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_latency_by_key"
down_revision = "0010_usage_cube"
branch_labels = None
depends_on = None

# store/rollup_shapes.py as of this revision: key 1, model 2, upstream 4
SHAPES = (0, 1, 2, 4, 6)
OLD_SHAPES = (0, 2, 4)  # what 0010 kept
# Latency bucket b holds [2^(b/8), 2^((b+1)/8)) ms; bucket 0 everything below 2^(1/8).
BOUNDS = [2 ** (b / 8) for b in range(1, 256)]
TABLES = (("usage_latency", "hour"), ("usage_latency_daily", "day"))


def _create(name: str, bucket: str, with_key: bool) -> None:
    key = [sa.Column("key_id", sa.Integer(), nullable=False)] if with_key else []
    unique = ["dims", *(["key_id"] if with_key else []), "model", "upstream", bucket, "ms_bucket"]
    op.create_table(
        name,
        sa.Column(bucket, sa.DateTime(timezone=True), nullable=False),
        sa.Column("dims", sa.SmallInteger(), nullable=False),
        *key,
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("upstream", sa.String(length=200), nullable=False),
        sa.Column("ms_bucket", sa.SmallInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint(*unique, name=f"uq_{name}"),
    )
    if with_key:  # one key's histogram rows, as the cube's per-key index
        op.create_index(
            f"ix_{name}_key_{bucket}",
            name,
            ["key_id", bucket],
            sqlite_where=sa.text("dims = 1"),
            postgresql_where=sa.text("dims = 1"),
        )


def _fill_from_raw(postgres: bool) -> None:
    if postgres:
        hour = "date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        array = ", ".join(repr(b) for b in BOUNDS)
        bucket = f"width_bucket(latency_ms, ARRAY[{array}]::float8[])"
    else:
        hour = "substr(ts, 1, 13) || ':00:00.000000'"
        op.execute("CREATE TEMP TABLE tmp_latency_bounds (lo REAL PRIMARY KEY, b INTEGER)")
        op.get_bind().exec_driver_sql(
            "INSERT INTO tmp_latency_bounds (lo, b) VALUES (?, ?)",
            [(lo, b) for b, lo in enumerate(BOUNDS, start=1)],
        )
        bucket = (
            "coalesce((SELECT b FROM tmp_latency_bounds WHERE lo <= latency_ms"
            " ORDER BY lo DESC LIMIT 1), 0)"
        )
    # One pass over the raw rows; every shape is summed from its result.
    op.execute(
        f"CREATE TEMP TABLE tmp_latency AS SELECT {hour} AS hour, coalesce(key_id, 0) AS key_id,"
        " coalesce(model, '') AS model, coalesce(upstream, '') AS upstream,"
        f" {bucket} AS ms_bucket, count(*) AS n"
        " FROM usage_records WHERE latency_ms IS NOT NULL GROUP BY 1, 2, 3, 4, 5"
    )
    for shape in SHAPES:
        _insert_shape(shape)
    op.execute("DROP TABLE tmp_latency")
    if not postgres:
        op.execute("DROP TABLE tmp_latency_bounds")


def _insert_shape(shape: int) -> None:
    """usage_latency rows of one shape, summed from the raw scan's grouped rows."""
    dims = {"key_id": shape & 1, "model": shape & 2, "upstream": shape & 4}
    picked = [name if kept else ("0" if name == "key_id" else "''") for name, kept in dims.items()]
    groups = ", ".join(["hour", "ms_bucket"] + [n for n, kept in dims.items() if kept])
    op.execute(
        "INSERT INTO usage_latency (dims, key_id, model, upstream, hour, ms_bucket, requests)"
        f" SELECT {shape}, {', '.join(picked)}, hour, ms_bucket, sum(n) FROM tmp_latency"
        f" GROUP BY {groups}"
    )


def _daily(postgres: bool, with_key: bool) -> None:
    day = (
        "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        if postgres
        else "substr(hour, 1, 10) || ' 00:00:00.000000'"
    )
    cols = "dims, key_id, model, upstream" if with_key else "dims, model, upstream"
    op.execute(
        f"INSERT INTO usage_latency_daily ({cols}, day, ms_bucket, requests)"
        f" SELECT {cols}, {day}, ms_bucket, sum(requests) FROM usage_latency"
        f" GROUP BY {cols}, {day}, ms_bucket"
    )


def _analyze(postgres: bool) -> None:
    bind = op.get_bind()
    analysed = (
        postgres
        or bind.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).scalar()
    )
    if analysed:  # fresh figures for the planner on the rebuilt tables (see 0010)
        for name, _ in TABLES:
            op.execute(f"ANALYZE {name}")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, bucket in TABLES:
        op.drop_table(name)
        _create(name, bucket, with_key=True)
    _fill_from_raw(postgres)
    _daily(postgres, with_key=True)
    _analyze(postgres)


def downgrade() -> None:
    """Back to 0010's tables and shapes: their rows are kept as they are (no raw scan)."""
    postgres = op.get_bind().dialect.name == "postgresql"
    kept = ", ".join(str(s) for s in OLD_SHAPES)
    op.execute(
        "CREATE TEMP TABLE tmp_latency_kept AS SELECT dims, model, upstream, hour, ms_bucket,"
        f" requests FROM usage_latency WHERE dims IN ({kept})"
    )
    for name, bucket in TABLES:
        op.drop_table(name)
        _create(name, bucket, with_key=False)
    op.execute(
        "INSERT INTO usage_latency (dims, model, upstream, hour, ms_bucket, requests)"
        " SELECT dims, model, upstream, hour, ms_bucket, requests FROM tmp_latency_kept"
    )
    op.execute("DROP TABLE tmp_latency_kept")
    _daily(postgres, with_key=False)
    _analyze(postgres)
