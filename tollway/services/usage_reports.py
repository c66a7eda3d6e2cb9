"""Usage reports over the rollups (daily for whole days, hourly at a range's edges): totals,
breakdowns, top lists and time series.

Never scans raw usage rows, so they stay fast with millions of requests (see
bench/usage_queries.py). Every function takes the same keyword filters:
start/end (UTC range, whole hours), key_id, model, upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Unpack

from sqlalchemy import Subquery, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.services.errors import Invalid
from tollway.services.usage_filters import UsageFilters
from tollway.services.usage_models import (
    COUNTERS,
    MAX_GROUPS,
    MAX_POINTS,
    Bucket,
    KeyUsage,
    UsageGroup,
    UsagePoint,
    UsageStats,
    check_bucket,
    check_limit,
    check_order,
    day_floor,
    default_range,
    having_requests,
    hour_floor,
    order_column,
    rollup_source,
    stats_of,
    sums,
)
from tollway.store.queries import as_utc
from tollway.store.tables import api_keys


async def _totals(conn: AsyncConnection, src: Subquery) -> UsageStats:
    row = (await conn.execute(select(*sums(src.c)))).one()
    return UsageStats(**stats_of(row))


async def _groups(
    conn: AsyncConnection, src: Subquery, column: str, order: str, limit: int
) -> list[UsageGroup]:
    col = src.c[column]
    stmt = (
        select(col.label("name"), *sums(src.c))
        .group_by(col)
        .having(having_requests(src.c))
        .order_by(order_column(src.c, check_order(order)).desc(), col)
        .limit(check_limit(limit, MAX_GROUPS))
    )
    rows = (await conn.execute(stmt)).all()
    return [UsageGroup(name=row.name, **stats_of(row)) for row in rows]


async def _keys(conn: AsyncConnection, src: Subquery, order: str, limit: int) -> list[KeyUsage]:
    top = (
        select(src.c.key_id.label("key_id"), *sums(src.c))
        .group_by(src.c.key_id)
        .having(having_requests(src.c))
        .order_by(order_column(src.c, check_order(order)).desc(), src.c.key_id)
        .limit(check_limit(limit, MAX_GROUPS))
        .subquery("top")
    )
    # Names joined after grouping: the join touches only `limit` rows.
    stmt = select(top, api_keys.c.name.label("key_name"), api_keys.c.prefix).select_from(
        top.outerjoin(api_keys, api_keys.c.id == top.c.key_id)
    )
    rows = (await conn.execute(stmt)).all()
    items = [
        KeyUsage(key_id=int(row.key_id), name=row.key_name, prefix=row.prefix, **stats_of(row))
        for row in rows
    ]
    # The outer select does not keep the subquery's order on every database.
    sort = {"requests": "requests", "tokens": "total_tokens", "cost": "cost_usd"}.get(order, order)
    items.sort(key=lambda k: (-getattr(k, sort), k.key_id))
    return items


async def totals(engine: AsyncEngine, **filters: Unpack[UsageFilters]) -> UsageStats:
    """Sums over the range (all time when start/end are None)."""
    src = rollup_source(**filters)
    async with engine.connect() as conn:
        return await _totals(conn, src)


async def by_key(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    model: str | None = None,
    upstream: str | None = None,
    order: str = "requests",
    limit: int = 100,
) -> list[KeyUsage]:
    """Usage per client key, largest first by `order` (requests, tokens, cost, errors)."""
    src = rollup_source(start=start, end=end, model=model, upstream=upstream, group=("key_id",))
    async with engine.connect() as conn:
        return await _keys(conn, src, order, limit)


async def _by(
    engine: AsyncEngine, column: str, order: str, limit: int, **filters: Any
) -> list[UsageGroup]:
    check_order(order)
    check_limit(limit, MAX_GROUPS)
    src = rollup_source(group=(column,), **filters)
    async with engine.connect() as conn:
        return await _groups(conn, src, column, order, limit)


async def by_model(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: int | None = None,
    upstream: str | None = None,
    order: str = "requests",
    limit: int = 100,
) -> list[UsageGroup]:
    """Usage per public model name ("" = requests without a model)."""
    return await _by(
        engine, "model", order, limit, start=start, end=end, key_id=key_id, upstream=upstream
    )


async def by_upstream(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: int | None = None,
    model: str | None = None,
    order: str = "requests",
    limit: int = 100,
) -> list[UsageGroup]:
    """Usage per upstream name ("" = requests that never reached one)."""
    return await _by(
        engine, "upstream", order, limit, start=start, end=end, key_id=key_id, model=model
    )


async def by_endpoint(
    engine: AsyncEngine,
    *,
    order: str = "requests",
    limit: int = 100,
    **filters: Unpack[UsageFilters],
) -> list[UsageGroup]:
    """Usage per endpoint path (/v1/chat/completions, ...)."""
    return await _by(engine, "endpoint", order, limit, **filters)


async def top_keys(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    order: str = "requests",
    limit: int = 10,
) -> list[KeyUsage]:
    """The `limit` busiest keys in the range."""
    return await by_key(engine, start=start, end=end, order=order, limit=limit)


async def top_models(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    order: str = "requests",
    limit: int = 10,
) -> list[UsageGroup]:
    """The `limit` busiest models in the range."""
    return await by_model(engine, start=start, end=end, order=order, limit=limit)


def _buckets(start: datetime, end: datetime, bucket: Bucket) -> list[datetime]:
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    first = hour_floor(start) if bucket == "hour" else day_floor(start)
    count = int((end - first) / step) + 1
    if count > MAX_POINTS:
        raise Invalid(f"range too long: more than {MAX_POINTS} {bucket}s; use a wider bucket")
    points = [first + i * step for i in range(count)]
    return [p for p in points if p < end]


async def _series(
    conn: AsyncConnection, start: datetime, end: datetime, bucket: Bucket, src: Subquery
) -> list[UsagePoint]:
    return series_points(await series_rows(conn, src), start, end, bucket)


async def series_rows(conn: AsyncConnection, src: Subquery) -> Sequence[Any]:
    # Grouped by rollup bucket in SQL (portable), folded into days by series_points.
    stmt = select(src.c.bucket, *sums(src.c)).group_by(src.c.bucket)
    return (await conn.execute(stmt)).all()


def series_points(
    rows: Sequence[Any], start: datetime, end: datetime, bucket: Bucket
) -> list[UsagePoint]:
    acc: dict[datetime, dict[str, float]] = {b: {} for b in _buckets(start, end, bucket)}
    for row in rows:
        at = as_utc(row.bucket)
        slot = acc.get(at if bucket == "hour" else day_floor(at))
        if slot is None:
            continue
        for name in COUNTERS:
            slot[name] = slot.get(name, 0) + getattr(row, name)
    points = []
    for b, slot in acc.items():
        n = int(slot.get("requests", 0))
        lat = float(slot.pop("latency_ms_sum", 0.0))
        data = {k: (float(v) if k == "cost_usd" else int(v)) for k, v in slot.items()}
        points.append(
            UsagePoint(bucket=b, **data, avg_latency_ms=lat / n if n else None)  # type: ignore[arg-type]
        )
    return points


async def timeseries(
    engine: AsyncEngine,
    *,
    bucket: str = "hour",
    **filters: Unpack[UsageFilters],
) -> list[UsagePoint]:
    """One point per hour or UTC day in [start, end), empty buckets included as zeros.
    Counts start at start's hour, so the points always add up to `totals` over the same range.

    Defaults: end = now; start = 24 hours (hour) or 30 days (day) before end.
    """
    b = check_bucket(bucket)
    start, end = default_range(filters.get("start"), filters.get("end"), b)
    filters["start"], filters["end"] = start, end
    src = rollup_source(hourly_only=b == "hour", **filters)
    async with engine.connect() as conn:
        return await _series(conn, start, end, b, src)
