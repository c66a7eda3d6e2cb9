"""Latency percentiles (p50/p95) per hour or UTC day.

Percentiles cannot be summed from the rollups' latency sums. They come from the latency
histograms (store/rollup_shapes.py: request counts per latency bucket, 8 buckets per doubling,
in all, per key, per model, per upstream, per model and upstream; whole hours like every rollup
report), so a value is the middle of the bucket the exact percentile falls in: within 4.4 % of
it. A key with a model or an upstream has no histogram: those read the key's latencies from raw
rows, newest first and capped at `max_rows`; a point computed from a capped read says so
(`sampled`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, func, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid
from tollway.services.usage_filters import where_terms
from tollway.services.usage_models import (
    MAX_POINTS,
    check_bucket,
    day_floor,
    default_range,
    hour_floor,
    range_spans,
)
from tollway.services.usage_records import record_filters
from tollway.store.queries import as_utc
from tollway.store.rollup_shapes import (
    KEY,
    MODEL,
    UPSTREAM,
    bucket_value,
    dims_is,
    pick_latency_shape,
)
from tollway.store.tables import usage_latency, usage_latency_daily, usage_records

u = usage_records.c
MAX_LATENCY_ROWS = 50_000


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


def counted_percentile(counts: dict[int, int], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a histogram {latency bucket: requests}: the
    middle of the bucket the rank falls in."""
    n = sum(counts.values())
    if not n:
        return None
    rank = max(1, math.ceil(q / 100 * n))
    seen = 0
    for b in sorted(counts):
        seen += counts[b]
        if seen >= rank:
            return bucket_value(b)
    return None  # not reached: seen ends at n >= rank


def _slots(start: datetime, end: datetime, bucket: str) -> dict[datetime, list[float]]:
    floor = hour_floor if bucket == "hour" else day_floor
    first = floor(start)
    step = 3600 if bucket == "hour" else 86400
    if (end - first).total_seconds() / step > MAX_POINTS:
        raise Invalid(f"range too long: more than {MAX_POINTS} {bucket}s; use a wider bucket")
    groups: dict[datetime, list[float]] = {}
    cursor = first
    while cursor < end:
        groups[cursor] = []
        cursor = datetime.fromtimestamp(cursor.timestamp() + step, cursor.tzinfo)
    return groups


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
    given = (("key_id", key_id), ("model", model), ("upstream", upstream))
    shape = pick_latency_shape({n for n, v in given if v is not None})
    if shape is None:
        return await _from_raw(engine, start, end, b, key_id, model, upstream, max_rows)
    groups = _slots(start, end, b)  # validates the range's length before any query
    parts = []
    for daily, lo, hi, sign in range_spans(start, end, hourly_only=b == "hour"):
        t = usage_latency_daily if daily else usage_latency
        col = t.c.day if daily else t.c.hour
        # A dimension the shape does not keep holds its constant: spelled out, so the read
        # walks the unique index (dims, key_id, model, upstream, bucket) to the bucket range.
        equal = [
            (t.c.key_id, key_id if shape & KEY else 0),
            (t.c.model, model if shape & MODEL else ""),
            (t.c.upstream, upstream if shape & UPSTREAM else ""),
        ]
        conds = where_terms(col, lo, hi, equal)
        counted = t.c.requests if sign > 0 else -t.c.requests  # hours outside a partial day
        parts.append(
            select(col.label("at"), t.c.ms_bucket, counted.label("requests")).where(
                dims_is(t.c.dims, shape), *conds
            )
        )
    src = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("latency")
    stmt = select(src.c.at, src.c.ms_bucket, func.sum(src.c.requests).label("n")).group_by(
        src.c.at, src.c.ms_bucket
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    floor = hour_floor if b == "hour" else day_floor
    per: dict[datetime, dict[int, int]] = {when: {} for when in groups}
    overall: dict[int, int] = {}
    slots: dict[Any, dict[int, int] | None] = {}  # ~40 rows per bucket: floor each once
    # Unpacked by position: a Row's attribute access costs ~1 µs, and a week by hour is
    # thousands of rows.
    for at, ms_bucket_, n_ in rows:
        if at not in slots:
            slots[at] = per.get(floor(as_utc(at)))
        slot = slots[at]
        if slot is None:
            continue
        ms_bucket, n = int(ms_bucket_), int(n_)
        slot[ms_bucket] = slot.get(ms_bucket, 0) + n
        overall[ms_bucket] = overall.get(ms_bucket, 0) + n
    return LatencySeries(
        start=start,
        end=end,
        bucket=b,
        sampled=False,
        overall_p50_ms=counted_percentile(overall, 50),
        overall_p95_ms=counted_percentile(overall, 95),
        points=[
            LatencyPoint(
                bucket=when,
                count=sum(counts.values()),
                p50_ms=counted_percentile(counts, 50),
                p95_ms=counted_percentile(counts, 95),
            )
            for when, counts in per.items()
        ],
    )


async def _from_raw(
    engine: AsyncEngine,
    start: datetime,
    end: datetime,
    b: str,
    key_id: int | None,
    model: str | None,
    upstream: str | None,
    max_rows: int,
) -> LatencySeries:
    """Exact nearest-rank percentiles of the newest `max_rows` raw latencies in the range."""
    conds = record_filters(start=start, end=end, key_id=key_id, model=model, upstream=upstream)
    groups = _slots(start, end, b)
    stmt = (
        select(u.ts, u.latency_ms)
        .where(and_(true(), u.latency_ms.is_not(None), *conds))
        .order_by(u.ts.desc(), u.id.desc())  # newest first, along the (key_id, ts) index
        .limit(max_rows + 1)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    sampled = len(rows) > max_rows
    floor = hour_floor if b == "hour" else day_floor
    everything: list[float] = []
    for ts, latency_ms in rows[:max_rows]:  # by position: see latency_series
        slot = groups.get(floor(as_utc(ts)))
        if slot is not None:
            slot.append(float(latency_ms))
            everything.append(float(latency_ms))
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
