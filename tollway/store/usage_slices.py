"""The narrower rollups (cube) and latency histograms of one batch, built from the same
inserted rows as the full rollups and upserted in the writer's transaction.

Only rows the INSERT returned reach here (store/usage_writer.py), so a replayed event is
counted in none of the tables, exactly as in the full rollups.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tollway.store.rollup_shapes import (
    CUBE_SHAPES,
    KEY,
    LATENCY_SHAPES,
    MODEL,
    UPSTREAM,
    latency_bucket,
    project,
)
from tollway.store.tables import (
    usage_cube,
    usage_cube_daily,
    usage_latency,
    usage_latency_daily,
)
from tollway.store.upsert_rows import add_rows

# (bucket, key_id, model, upstream, endpoint), as the full rollups key their rows
RollupKey = tuple[datetime, int, str, str, str]
CubeKey = tuple[Any, ...]  # dims, bucket, key_id, model, upstream, endpoint
LatencyKey = tuple[Any, ...]  # dims, key_id, model, upstream, bucket, ms bucket
Sample = tuple[datetime, int, str, str, float]  # hour, key_id, model, upstream, latency ms


class Counters(Protocol):
    requests: int
    errors: int
    client_errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    latency_ms_sum: float


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


def cube_rows(rollups: dict[RollupKey, Counters]) -> dict[CubeKey, list[float]]:
    """Every cube shape's sums of these full rollups (one bucket size)."""
    out: dict[CubeKey, list[float]] = {}
    for (bucket, key_id, model, upstream, endpoint), r in rollups.items():
        values = [getattr(r, name) for name in COUNTERS]
        for shape in CUBE_SHAPES:
            ck = (shape, bucket, *project(shape, key_id, model, upstream, endpoint))
            acc = out.get(ck)
            if acc is None:
                out[ck] = list(values)
            else:
                for i, v in enumerate(values):
                    acc[i] += v
    return out


def latency_rows(samples: Iterable[Sample]) -> dict[LatencyKey, int]:
    """Request counts per latency bucket for each latency shape, from the inserted rows that
    have a latency."""
    out: dict[LatencyKey, int] = {}
    for hour, key_id, model, upstream, ms in samples:
        b = latency_bucket(ms)
        for shape in LATENCY_SHAPES:
            lk = (
                shape,
                key_id if shape & KEY else 0,
                model if shape & MODEL else "",
                upstream if shape & UPSTREAM else "",
                hour,
                b,
            )
            out[lk] = out.get(lk, 0) + 1
    return out


def _day(dt: datetime) -> datetime:
    return dt.replace(hour=0)


def cube_by_day(rows: dict[CubeKey, list[float]]) -> dict[CubeKey, list[float]]:
    out: dict[CubeKey, list[float]] = {}
    for (shape, hour, *dims), values in rows.items():
        dk = (shape, _day(hour), *dims)
        acc = out.get(dk)
        if acc is None:
            out[dk] = list(values)
        else:
            for i, v in enumerate(values):
                acc[i] += v
    return out


def latency_by_day(rows: dict[LatencyKey, int]) -> dict[LatencyKey, int]:
    out: dict[LatencyKey, int] = {}
    for (shape, key_id, model, upstream, hour, b), n in rows.items():
        dk = (shape, key_id, model, upstream, _day(hour), b)
        out[dk] = out.get(dk, 0) + n
    return out


async def write_slices(
    conn: AsyncConnection,
    hourly: dict[RollupKey, Counters],
    samples: list[Sample],
) -> None:
    """Upsert the batch's cube and latency rows, hourly and daily, each table's rows sorted
    (so concurrent writers lock rows in one order, as for the full rollups)."""
    cube_h = cube_rows(hourly)
    for table, bucket, rows in (
        (usage_cube, "hour", cube_h),
        (usage_cube_daily, "day", cube_by_day(cube_h)),
    ):
        keys: tuple[str, ...] = ("dims", bucket, "key_id", "model", "upstream", "endpoint")
        values = [(*ck, *_typed(v)) for ck, v in sorted(rows.items())]
        await add_rows(conn, table, keys, COUNTERS, values)
    if not samples:
        return
    lat_h = latency_rows(samples)
    for table, bucket, counts in (
        (usage_latency, "hour", lat_h),
        (usage_latency_daily, "day", latency_by_day(lat_h)),
    ):
        keys = ("dims", "key_id", "model", "upstream", bucket, "ms_bucket")
        await add_rows(
            conn, table, keys, ("requests",), [(*lk, n) for lk, n in sorted(counts.items())]
        )


def _typed(values: list[float]) -> list[Any]:
    """Integer counters as int, the two float sums as float (asyncpg checks types)."""
    return [int(v) for v in values[:6]] + [float(values[6]), float(values[7])]
