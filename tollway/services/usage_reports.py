"""Usage reports over the hourly rollups: totals, breakdowns, top lists and time series.

Never scans raw usage rows, so they stay fast with millions of requests (see
bench/usage_queries.py). Every function takes the same keyword filters:
start/end (UTC range, whole hours), key_id, model, upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.services.errors import Invalid
from tollway.services.usage_models import (
    MAX_GROUPS,
    MAX_POINTS,
    ORDER_COLUMNS,
    SUMS,
    Bucket,
    KeyUsage,
    UsageGroup,
    UsagePoint,
    UsageReport,
    UsageStats,
    check_bucket,
    check_limit,
    check_order,
    day_floor,
    default_range,
    hour_floor,
    r,
    rollup_filters,
    stats_of,
)
from tollway.store.queries import as_utc
from tollway.store.tables import api_keys


def _where(conds: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    return and_(true(), *conds)


async def _totals(conn: AsyncConnection, conds: Sequence[ColumnElement[bool]]) -> UsageStats:
    row = (await conn.execute(select(*SUMS).where(_where(conds)))).one()
    return UsageStats(**stats_of(row))


async def _groups(
    conn: AsyncConnection,
    column: Any,
    conds: Sequence[ColumnElement[bool]],
    order: str,
    limit: int,
) -> list[UsageGroup]:
    order_col = ORDER_COLUMNS[check_order(order)]
    stmt = (
        select(column.label("name"), *SUMS)
        .where(_where(conds))
        .group_by(column)
        .order_by(order_col.desc(), column)
        .limit(check_limit(limit, MAX_GROUPS))
    )
    rows = (await conn.execute(stmt)).all()
    return [UsageGroup(name=row.name, **stats_of(row)) for row in rows]


async def _keys(
    conn: AsyncConnection, conds: Sequence[ColumnElement[bool]], order: str, limit: int
) -> list[KeyUsage]:
    order_col = ORDER_COLUMNS[check_order(order)]
    sub = (
        select(r.key_id.label("key_id"), *SUMS)
        .where(_where(conds))
        .group_by(r.key_id)
        .order_by(order_col.desc(), r.key_id)
        .limit(check_limit(limit, MAX_GROUPS))
        .subquery()
    )
    # Names joined after grouping: the join touches only `limit` rows.
    stmt = select(sub, api_keys.c.name.label("key_name"), api_keys.c.prefix).select_from(
        sub.outerjoin(api_keys, api_keys.c.id == sub.c.key_id)
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


async def totals(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
) -> UsageStats:
    """Sums over the range (all time when start/end are None)."""
    conds = rollup_filters(start=start, end=end, key_id=key_id, model=model, upstream=upstream)
    async with engine.connect() as conn:
        return await _totals(conn, conds)


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
    conds = rollup_filters(start=start, end=end, model=model, upstream=upstream)
    async with engine.connect() as conn:
        return await _keys(conn, conds, order, limit)


async def _by(
    engine: AsyncEngine, column: Any, order: str, limit: int, **filters: Any
) -> list[UsageGroup]:
    conds = rollup_filters(**filters)
    async with engine.connect() as conn:
        return await _groups(conn, column, conds, order, limit)


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
        engine, r.model, order, limit, start=start, end=end, key_id=key_id, upstream=upstream
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
        engine, r.upstream, order, limit, start=start, end=end, key_id=key_id, model=model
    )


async def by_endpoint(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
    order: str = "requests",
    limit: int = 100,
) -> list[UsageGroup]:
    """Usage per endpoint path (/v1/chat/completions, ...)."""
    return await _by(
        engine,
        r.endpoint,
        order,
        limit,
        start=start,
        end=end,
        key_id=key_id,
        model=model,
        upstream=upstream,
    )


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
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    conds: Sequence[ColumnElement[bool]],
) -> list[UsagePoint]:
    # Grouped by hour in SQL (portable), folded into days here: at most 24 rows per day.
    stmt = select(r.hour, *SUMS).where(_where(conds)).group_by(r.hour)
    rows = (await conn.execute(stmt)).all()
    acc: dict[datetime, dict[str, float]] = {b: {} for b in _buckets(start, end, bucket)}
    for row in rows:
        hour = as_utc(row.hour)
        b = hour if bucket == "hour" else day_floor(hour)
        slot = acc.get(b)
        if slot is None:
            continue
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens"):
            slot[name] = slot.get(name, 0) + int(getattr(row, name))
        slot["total_tokens"] = slot.get("total_tokens", 0) + int(row.total_tokens)
        slot["cost_usd"] = slot.get("cost_usd", 0.0) + float(row.cost_usd)
        slot["latency_ms_sum"] = slot.get("latency_ms_sum", 0.0) + float(row.latency_ms_sum)
    points = []
    for b, slot in acc.items():
        n = int(slot.get("requests", 0))
        lat = slot.pop("latency_ms_sum", 0.0)
        points.append(
            UsagePoint(bucket=b, **slot, avg_latency_ms=lat / n if n else None)  # type: ignore[arg-type]
        )
    return points


async def timeseries(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket: str = "hour",
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
) -> list[UsagePoint]:
    """One point per hour or UTC day in [start, end), empty buckets included as zeros.
    Counts start at start's hour, so the points always add up to `totals` over the same range.

    Defaults: end = now; start = 24 hours (hour) or 30 days (day) before end.
    """
    b = check_bucket(bucket)
    start, end = default_range(start, end, b)
    conds = rollup_filters(start=start, end=end, key_id=key_id, model=model, upstream=upstream)
    async with engine.connect() as conn:
        return await _series(conn, start, end, b, conds)


async def report(
    engine: AsyncEngine,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket: str = "day",
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
    top: int = 10,
) -> UsageReport:
    """Everything about a range in one call (what `tollway usage` and the dashboard show):
    totals, a time series, and the `top` keys, models, upstreams and endpoints."""
    b = check_bucket(bucket)
    start, end = default_range(start, end, b)
    check_limit(top, MAX_GROUPS)
    f: dict[str, Any] = {"key_id": key_id, "model": model, "upstream": upstream}
    async with engine.connect() as conn:
        conds = rollup_filters(start=start, end=end, **f)
        result = UsageReport(
            start=start,
            end=end,
            bucket=b,
            **f,
            totals=await _totals(conn, conds),
            series=await _series(conn, start, end, b, conds),
            by_key=await _keys(conn, conds, "requests", top),
            by_model=await _groups(conn, r.model, conds, "requests", top),
            by_upstream=await _groups(conn, r.upstream, conds, "requests", top),
            by_endpoint=await _groups(conn, r.endpoint, conds, "requests", top),
        )
    return result
