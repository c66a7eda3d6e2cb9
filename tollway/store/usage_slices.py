"""The narrower rollups (cube) and latency histograms of one batch, built from the same
inserted rows as the full rollups and upserted in the writer's transaction.

Only rows the INSERT returned reach here (store/usage_writer.py), so a replayed event is
counted in none of the tables, exactly as in the full rollups.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from tollway.store.queries import upsert
from tollway.store.rollup_shapes import (
    CUBE_SHAPES,
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

# (bucket, key_id, model, upstream, endpoint), as the full rollups key their rows
RollupKey = tuple[datetime, int, str, str, str]
CubeKey = tuple[Any, ...]  # dims, bucket, key_id, model, upstream, endpoint
LatencyKey = tuple[Any, ...]  # dims, model, upstream, bucket, ms bucket


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


def latency_rows(samples: Iterable[tuple[datetime, str, str, float]]) -> dict[LatencyKey, int]:
    """Request counts per latency bucket for each latency shape; samples are
    (hour, model, upstream, latency ms) of the inserted rows that have a latency."""
    out: dict[LatencyKey, int] = {}
    for hour, model, upstream, ms in samples:
        b = latency_bucket(ms)
        for shape in LATENCY_SHAPES:
            lk = (
                shape,
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
    for (shape, model, upstream, hour, b), n in rows.items():
        dk = (shape, model, upstream, _day(hour), b)
        out[dk] = out.get(dk, 0) + n
    return out


async def _upsert(
    conn: AsyncConnection, table: Table, keys: tuple[str, ...], counters: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> None:  # fmt: skip
    stmt = upsert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.c[name] + stmt.excluded[name] for name in counters},
    )
    await conn.execute(stmt, rows)


async def write_slices(
    conn: AsyncConnection,
    hourly: dict[RollupKey, Counters],
    samples: list[tuple[datetime, str, str, float]],
) -> None:
    """Upsert the batch's cube and latency rows, hourly and daily, each table's rows sorted
    (so concurrent writers lock rows in one order, as for the full rollups)."""
    cube_h = cube_rows(hourly)
    cube_keys: tuple[str, ...]
    for table, bucket, rows in (
        (usage_cube, "hour", cube_h),
        (usage_cube_daily, "day", cube_by_day(cube_h)),
    ):
        cube_keys = ("dims", bucket, "key_id", "model", "upstream", "endpoint")
        params = [
            {**dict(zip(cube_keys, ck, strict=True)), **dict(zip(COUNTERS, v, strict=True))}
            for ck, v in sorted(rows.items())
        ]
        await _upsert(conn, table, cube_keys, COUNTERS, params)
    if not samples:
        return
    lat_h = latency_rows(samples)
    for table, bucket, counts in (
        (usage_latency, "hour", lat_h),
        (usage_latency_daily, "day", latency_by_day(lat_h)),
    ):
        keys = ("dims", "model", "upstream", bucket, "ms_bucket")
        params = [
            {**dict(zip(keys, lk, strict=True)), "requests": n} for lk, n in sorted(counts.items())
        ]
        await _upsert(conn, table, keys, ("requests",), params)
