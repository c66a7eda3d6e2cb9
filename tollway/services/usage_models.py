"""Shapes returned by the usage reports, and the range/filter helpers they share.

All times are aware UTC datetimes. Rollup-based reports work in whole hours: a range
[start, end) covers every hour bucket that starts at or after start rounded down to the hour
and before end.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Select, Subquery, Table, and_, func, select, true, union_all

from tollway.services.errors import Invalid
from tollway.services.usage_filters import where_terms
from tollway.store.queries import as_utc, utcnow
from tollway.store.rollup_shapes import FULL, dims_is, pick_shape
from tollway.store.tables import usage_cube, usage_cube_daily, usage_rollups, usage_rollups_daily
from tollway.store.usage_slices import COUNTERS as COUNTERS  # the services import it from here

Bucket = Literal["hour", "day"]
Order = Literal["requests", "tokens", "cost", "errors"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day")
ORDERS: tuple[Order, ...] = ("requests", "tokens", "cost", "errors")
MAX_POINTS = 10_000  # a time series longer than this is refused (ask for days instead)
MAX_GROUPS = 1000


class UsageTotals(BaseModel):
    requests: int = 0
    errors: int = 0
    # Of the errors: refused by Tollway (auth, limits, bad requests); the rest are upstream-side.
    client_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


class UsageStats(UsageTotals):
    """Totals plus the mean upstream latency of the requests counted (None when none)."""

    avg_latency_ms: float | None = None


class UsageGroup(UsageStats):
    name: str  # endpoint, model or upstream; "" = requests without one


class KeyUsage(UsageStats):
    key_id: int  # 0 = requests made without a valid key
    name: str | None  # None when the key was deleted (its usage stays)
    prefix: str | None


class UsagePoint(UsageStats):
    bucket: datetime  # start of the hour or UTC day


class UsageReport(BaseModel):
    """One range, optionally narrowed to a key, model and/or upstream."""

    start: datetime
    end: datetime
    bucket: Bucket
    key_id: int | None
    model: str | None
    upstream: str | None
    totals: UsageStats
    series: list[UsagePoint]
    by_key: list[KeyUsage]
    by_model: list[UsageGroup]
    by_upstream: list[UsageGroup]
    by_endpoint: list[UsageGroup]


def sums(c: Any) -> list[Any]:
    """SUM of every counter of a rollup source's columns `c`, labelled by name.
    SUM over BIGINT is NUMERIC on PostgreSQL (Decimal in Python): cast back when building."""
    return [
        func.coalesce(
            func.sum(c[name]), 0.0 if name in ("cost_usd", "latency_ms_sum") else 0
        ).label(name)
        for name in COUNTERS
    ]


def order_column(c: Any, order: str) -> Any:
    name = {"requests": "requests", "tokens": "total_tokens", "cost": "cost_usd"}.get(order, order)
    return func.sum(c[name])


def totals_of(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests),
        "errors": int(row.errors),
        "client_errors": int(row.client_errors),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "total_tokens": int(row.total_tokens),
        "cost_usd": float(row.cost_usd),
    }


def stats_of(row: Any) -> dict[str, Any]:
    data = totals_of(row)
    n = data["requests"]
    data["avg_latency_ms"] = float(row.latency_ms_sum) / n if n else None
    return data


def hour_floor(dt: datetime) -> datetime:
    return dt.replace(minute=0, second=0, microsecond=0)


def day_floor(dt: datetime) -> datetime:
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def check_range(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    try:
        start, end = as_utc(start), as_utc(end)
    except OverflowError:
        raise Invalid("start/end out of range") from None
    for dt in (start, end):
        if dt is not None and not 1970 <= dt.year <= 9998:
            raise Invalid("start/end must be between 1970 and 9998")
    if start is not None and end is not None and start >= end:
        raise Invalid("start must be before end")
    return start, end


def default_range(
    start: datetime | None, end: datetime | None, bucket: Bucket
) -> tuple[datetime, datetime]:
    """A closed range for series and reports: up to now; the last 24 hours or 30 days."""
    start, end = check_range(start, end)
    if end is None:
        end = utcnow()
    if start is None:
        start = end - (timedelta(hours=24) if bucket == "hour" else timedelta(days=30))
        if start >= end:
            raise Invalid("start must be before end")
    return start, end


def _part(
    table: Table,
    column: str,
    span: Span,
    f: dict[str, Any],
    shape: int,
) -> Select[Any]:
    t = table.c
    _, lo, hi, sign = span
    conds = where_terms(t[column], lo, hi, [(t[name], value) for name, value in f.items()])
    if shape != FULL:
        conds.insert(0, dims_is(t.dims, shape))
    cols = [t[column].label("bucket"), t.key_id, t.model, t.upstream, t.endpoint]
    counters = [(t[name] if sign > 0 else -t[name]).label(name) for name in COUNTERS]
    return select(*cols, *counters).where(and_(true(), *conds))


Span = tuple[bool, datetime | None, datetime | None, int]  # (daily?, lo, hi, +1 or -1)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def _partial_day(day: datetime, lo: datetime, hi: datetime) -> list[Span]:
    """Hours [lo, hi) of the UTC day `day` (lo whole, hi possibly not): its hourly rows, or,
    when fewer, the day's row less the hourly rows outside [lo, hi). Today's row less the hours
    after now is one row: the hours to come have none."""
    inside = math.ceil((hi - lo) / HOUR)
    if inside <= 1 + (24 - inside):
        return [(False, lo, hi, 1)]
    spans: list[Span] = [(True, day, day + DAY, 1)]
    if lo > day:
        spans.append((False, day, lo, -1))
    if hi < day + DAY:
        spans.append((False, hi, day + DAY, -1))
    return spans


def range_spans(start: datetime | None, end: datetime | None, hourly_only: bool) -> list[Span]:
    """How [start, end) (start rounded down to its hour) is read: daily rows for every whole
    UTC day inside it, and for a partial day at either edge its hourly rows or its daily row
    less the hourly rows outside the range, whichever is fewer. Spans with sign -1 are
    subtracted: a grouped read over them keeps only groups with requests (HAVING)."""
    start, end = check_range(start, end)
    lo = hour_floor(start) if start is not None else None
    if hourly_only:
        return [(False, lo, end, 1)]
    if lo is not None and end is not None and day_floor(lo) == day_floor(end):
        return _partial_day(day_floor(lo), lo, end)
    spans: list[Span] = []
    first_day = lo
    if lo is not None and lo != day_floor(lo):
        first_day = day_floor(lo) + DAY
        spans += _partial_day(day_floor(lo), lo, first_day)
    last_day = day_floor(end) if end is not None else None
    if first_day is None or last_day is None or first_day < last_day:
        spans.append((True, first_day, last_day, 1))
    if end is not None and last_day is not None and last_day < end:
        spans += _partial_day(last_day, last_day, end)
    return spans


def rollup_source(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
    endpoint: str | None = None,
    hourly_only: bool = False,
    group: tuple[str, ...] = (),
) -> Subquery:
    """The rollup rows covering [start, end) (whole hours), as one subquery with the columns
    bucket, key_id, model, upstream, endpoint and the counters: daily rows for every whole UTC
    day inside the range, and for the partial days at its edges hourly rows, or the day's row
    with the hours outside subtracted (negative counters: grouped reads must keep only groups
    with `having_requests`). model/upstream "" select requests without one.

    `group` names the dimensions the caller groups by: the rows come from the smallest
    rollup that keeps those and the filtered ones (store/rollup_shapes.py); dimensions a
    shape does not keep read 0 or ""."""
    f = {"key_id": key_id, "model": model, "upstream": upstream, "endpoint": endpoint}
    filtered = {name for name, value in f.items() if value is not None}
    shape = pick_shape(set(group) | filtered, filtered)
    hourly, daily = (
        (usage_rollups, usage_rollups_daily) if shape == FULL else (usage_cube, usage_cube_daily)
    )
    parts = [
        _part(daily, "day", span, f, shape) if span[0] else _part(hourly, "hour", span, f, shape)
        for span in range_spans(start, end, hourly_only)
    ]
    if len(parts) == 1:
        return parts[0].subquery("rollups")
    return union_all(*parts).subquery("rollups")


def having_requests(c: Any) -> Any:
    """HAVING term for reads grouped by a dimension: a group whose rows were all subtracted
    (it had requests only in hours outside the range) nets to zero requests and is no group."""
    return func.sum(c.requests) > 0


def check_bucket(bucket: str) -> Bucket:
    if bucket not in BUCKETS:
        raise Invalid("bucket must be hour or day")
    return bucket


def check_order(order: str) -> Order:
    if order not in ORDERS:
        raise Invalid(f"order must be one of {', '.join(ORDERS)}")
    return order


def check_limit(limit: int, most: int) -> int:
    if not 1 <= limit <= most:
        raise Invalid(f"limit must be between 1 and {most}")
    return limit
