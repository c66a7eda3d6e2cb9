"""Shapes returned by the usage reports, and the range/filter helpers they share.

All times are aware UTC datetimes. Rollup-based reports work in whole hours: a range
[start, end) covers every hour bucket that starts at or after start rounded down to the hour
and before end.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import ColumnElement, func

from tollway.services.errors import Invalid
from tollway.store.queries import as_utc, utcnow
from tollway.store.tables import usage_rollups

r = usage_rollups.c

Bucket = Literal["hour", "day"]
Order = Literal["requests", "tokens", "cost", "errors"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day")
ORDERS: tuple[Order, ...] = ("requests", "tokens", "cost", "errors")
MAX_POINTS = 10_000  # a time series longer than this is refused (ask for days instead)
MAX_GROUPS = 1000


class UsageTotals(BaseModel):
    requests: int = 0
    errors: int = 0
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


# SUM over BIGINT is NUMERIC on PostgreSQL (Decimal in Python); cast back when building models.
SUMS = (
    func.coalesce(func.sum(r.requests), 0).label("requests"),
    func.coalesce(func.sum(r.errors), 0).label("errors"),
    func.coalesce(func.sum(r.prompt_tokens), 0).label("prompt_tokens"),
    func.coalesce(func.sum(r.completion_tokens), 0).label("completion_tokens"),
    func.coalesce(func.sum(r.total_tokens), 0).label("total_tokens"),
    func.coalesce(func.sum(r.cost_usd), 0.0).label("cost_usd"),
    func.coalesce(func.sum(r.latency_ms_sum), 0.0).label("latency_ms_sum"),
)

ORDER_COLUMNS = {
    "requests": func.sum(r.requests),
    "tokens": func.sum(r.total_tokens),
    "cost": func.sum(r.cost_usd),
    "errors": func.sum(r.errors),
}


def totals_of(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests),
        "errors": int(row.errors),
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


def rollup_filters(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: int | None = None,
    model: str | None = None,
    upstream: str | None = None,
    endpoint: str | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE terms over usage_rollups; model/upstream "" select requests without one."""
    start, end = check_range(start, end)
    conds: list[ColumnElement[bool]] = []
    if start is not None:
        conds.append(r.hour >= hour_floor(start))
    if end is not None:
        conds.append(r.hour < end)
    if key_id is not None:
        conds.append(r.key_id == key_id)
    if model is not None:
        conds.append(r.model == model)
    if upstream is not None:
        conds.append(r.upstream == upstream)
    if endpoint is not None:
        conds.append(r.endpoint == endpoint)
    return conds


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
