"""narrower usage rollups (cube) and latency histograms, filled from what is there

Revision ID: 0010_usage_cube
Revises: 0009_response_cache

The cube is summed from the full rollups; the latency histograms need every raw row with a
latency once (one grouped scan), and a key's record pages get an index on (key_id, id): on a
large usage table this migration takes minutes (bench/README.md: "Usage queries").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_usage_cube"
down_revision = "0009_response_cache"
branch_labels = None
depends_on = None

COUNTERS = (
    "requests",
    "errors",
    "client_errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms_sum",
)
# store/rollup_shapes.py as of this revision: key 1, model 2, upstream 4, endpoint 8
# Filled widest first: key+upstream and model+upstream+endpoint from the full rollups, then
# per key from key+upstream and in all from model+upstream+endpoint (fewer rows).
CUBE_FILL = ((5, None), (14, None), (1, 5), (0, 14))
LATENCY_SHAPES = (0, 2, 4)
# Latency bucket b holds [2^(b/8), 2^((b+1)/8)) ms; bucket 0 everything below 2^(1/8).
BOUNDS = [2 ** (b / 8) for b in range(1, 256)]


def _cube(name: str, bucket: str) -> None:
    op.create_table(
        name,
        sa.Column(bucket, sa.DateTime(timezone=True), nullable=False),
        sa.Column("dims", sa.SmallInteger(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("upstream", sa.String(length=200), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTERS[:6]),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.UniqueConstraint(
            "dims", bucket, "key_id", "model", "upstream", "endpoint", name=f"uq_{name}"
        ),
    )
    op.create_index(
        f"ix_{name}_dims_model_upstream_{bucket}", name, ["dims", "model", "upstream", bucket]
    )
    op.create_index(
        f"ix_{name}_key_{bucket}",
        name,
        ["key_id", bucket],
        sqlite_where=sa.text("dims = 1"),
        postgresql_where=sa.text("dims = 1"),
    )


def _latency(name: str, bucket: str) -> None:
    op.create_table(
        name,
        sa.Column(bucket, sa.DateTime(timezone=True), nullable=False),
        sa.Column("dims", sa.SmallInteger(), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("upstream", sa.String(length=200), nullable=False),
        sa.Column("ms_bucket", sa.SmallInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("dims", "model", "upstream", bucket, "ms_bucket", name=f"uq_{name}"),
    )


def _kept(shape: int) -> list[str]:
    """Each dimension's select expression for a shape: the column, or its constant."""
    return [
        "key_id" if shape & 1 else "0",
        "model" if shape & 2 else "''",
        "upstream" if shape & 4 else "''",
        "endpoint" if shape & 8 else "''",
    ]


def _fill_cube(name: str, full: str, bucket: str) -> None:
    sums = ", ".join(f"sum({c})" for c in COUNTERS)
    for shape, wider in CUBE_FILL:
        dims = _kept(shape)
        groups = ", ".join([bucket] + [d for d in dims if not d.startswith(("0", "'"))])
        source = full if wider is None else f"{name} WHERE dims = {wider}"
        op.execute(
            f"INSERT INTO {name} (dims, {bucket}, key_id, model, upstream, endpoint,"
            f" {', '.join(COUNTERS)}) SELECT {shape}, {bucket}, {', '.join(dims)}, {sums}"
            f" FROM {source} GROUP BY {groups}"
        )


def _fill_latency(postgres: bool) -> None:
    if postgres:
        hour = "date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        day = "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        array = ", ".join(repr(b) for b in BOUNDS)
        bucket = f"width_bucket(latency_ms, ARRAY[{array}]::float8[])"
    else:
        hour = "substr(ts, 1, 13) || ':00:00.000000'"
        day = "substr(hour, 1, 10) || ' 00:00:00.000000'"
        op.execute("CREATE TEMP TABLE tmp_latency_bounds (lo REAL PRIMARY KEY, b INTEGER)")
        op.get_bind().exec_driver_sql(
            "INSERT INTO tmp_latency_bounds (lo, b) VALUES (?, ?)",
            [(lo, b) for b, lo in enumerate(BOUNDS, start=1)],
        )
        bucket = (
            "coalesce((SELECT b FROM tmp_latency_bounds WHERE lo <= latency_ms"
            " ORDER BY lo DESC LIMIT 1), 0)"
        )
    # One pass over the raw rows; the shapes and days are summed from its result.
    op.execute(
        f"CREATE TEMP TABLE tmp_latency AS SELECT {hour} AS hour, coalesce(model, '') AS model,"
        f" coalesce(upstream, '') AS upstream, {bucket} AS ms_bucket, count(*) AS n"
        " FROM usage_records WHERE latency_ms IS NOT NULL GROUP BY 1, 2, 3, 4"
    )
    for shape in LATENCY_SHAPES:
        model = "model" if shape & 2 else "''"
        upstream = "upstream" if shape & 4 else "''"
        groups = ", ".join(["hour", "ms_bucket"] + [c for c in (model, upstream) if c[0] != "'"])
        op.execute(
            "INSERT INTO usage_latency (dims, model, upstream, hour, ms_bucket, requests)"
            f" SELECT {shape}, {model}, {upstream}, hour, ms_bucket, sum(n) FROM tmp_latency"
            f" GROUP BY {groups}"
        )
    op.execute(
        "INSERT INTO usage_latency_daily (dims, model, upstream, day, ms_bucket, requests)"
        f" SELECT dims, model, upstream, {day}, ms_bucket, sum(requests) FROM usage_latency"
        f" GROUP BY dims, model, upstream, {day}, ms_bucket"
    )
    op.execute("DROP TABLE tmp_latency")
    if not postgres:
        op.execute("DROP TABLE tmp_latency_bounds")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _cube("usage_cube", "hour")
    _cube("usage_cube_daily", "day")
    _latency("usage_latency", "hour")
    _latency("usage_latency_daily", "day")
    op.create_index("ix_usage_rollups_model_hour", "usage_rollups", ["model", "hour"])
    op.create_index("ix_usage_rollups_daily_model_day", "usage_rollups_daily", ["model", "day"])
    op.create_index("ix_usage_records_key_id", "usage_records", ["key_id", "id"])
    _fill_cube("usage_cube", "usage_rollups", "hour")
    _fill_cube("usage_cube_daily", "usage_rollups_daily", "day")
    _fill_latency(postgres)
    new = ("usage_cube", "usage_cube_daily", "usage_latency", "usage_latency_daily")
    if postgres:  # fresh statistics for the planner on the new tables
        for name in new:
            op.execute(f"ANALYZE {name}")
    elif (
        op.get_bind()
        .exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        .scalar()
    ):
        # An analysed SQLite database without figures for the new indexes would take each for
        # the most selective (a key's records by id over its ts range, say): add theirs.
        for name in (*new, "usage_rollups", "usage_rollups_daily", "ix_usage_records_key_id"):
            op.execute(f"ANALYZE {name}")


def downgrade() -> None:
    op.drop_index("ix_usage_records_key_id", "usage_records")
    op.drop_index("ix_usage_rollups_daily_model_day", "usage_rollups_daily")
    op.drop_index("ix_usage_rollups_model_hour", "usage_rollups")
    for name in ("usage_latency_daily", "usage_latency", "usage_cube_daily", "usage_cube"):
        op.drop_table(name)
