"""Latency percentiles (p50/p95) per hour or UTC day, from raw usage rows.

Percentiles cannot be summed, so the hourly rollups (which keep a latency sum) cannot give
them. This reads the latencies of the range from raw rows instead, newest first and capped at
`max_rows`, so a dashboard over a busy month reads a bounded amount; a point computed from a
capped read says so (`sampled`).
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import and_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid
from tollway.services.usage_models import (
    MAX_POINTS,
    check_bucket,
    day_floor,
    default_range,
    hour_floor,
)
from tollway.services.usage_records import record_filters
from tollway.store.queries import as_utc
from tollway.store.tables import usage_records

u = usage_records.c
MAX_LATENCY_ROWS = 200_000


class LatencyPoint(BaseModel):
    bucket: datetime
    count: int  # requests with a measured latency in this bucket (as read)
    p50_ms: float | None
    p95_ms: float | None


class LatencySeries(BaseModel):
    start: datetime
    end: datetime
    bucket: str
    sampled: bool  # True when the range held more rows than were read
    overall_p50_ms: float | None
    overall_p95_ms: float | None
    points: list[LatencyPoint]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def latency_series(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket: str = "hour",
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
    max_rows: int = MAX_LATENCY_ROWS,
) -> LatencySeries:
    """p50/p95 of upstream latency per bucket over [start, end) (same defaults as
    `timeseries`: the last 24 hours by hour, the last 30 days by day), empty buckets
    included with None."""
    b = check_bucket(bucket)
    start, end = default_range(start, end, b)
    conds = record_filters(start=start, end=end, key_id=key_id, model=model, upstream=upstream)
    stmt = (
        select(u.ts, u.latency_ms)
        .where(and_(true(), u.latency_ms.is_not(None), *conds))
        .order_by(u.id.desc())
        .limit(max_rows + 1)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    sampled = len(rows) > max_rows
    floor = hour_floor if b == "hour" else day_floor
    first = floor(start)
    step = 3600 if b == "hour" else 86400
    if (end - first).total_seconds() / step > MAX_POINTS:
        raise Invalid(f"range too long: more than {MAX_POINTS} {b}s; use a wider bucket")
    groups: dict[datetime, list[float]] = {}
    cursor = first
    while cursor < end:
        groups[cursor] = []
        cursor = datetime.fromtimestamp(cursor.timestamp() + step, cursor.tzinfo)
    everything: list[float] = []
    for row in rows[:max_rows]:
        slot = groups.get(floor(as_utc(row.ts)))
        if slot is not None:
            slot.append(float(row.latency_ms))
            everything.append(float(row.latency_ms))
    points = []
    for when, values in groups.items():
        values.sort()
        points.append(
            LatencyPoint(
                bucket=when,
                count=len(values),
                p50_ms=percentile(values, 50),
                p95_ms=percentile(values, 95),
            )
        )
    everything.sort()
    return LatencySeries(
        start=start,
        end=end,
        bucket=b,
        sampled=sampled,
        overall_p50_ms=percentile(everything, 50),
        overall_p95_ms=percentile(everything, 95),
        points=points,
    )
