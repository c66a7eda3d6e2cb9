"""The one-call usage report (`tollway usage`, the dashboard, GET /admin/api/usage).

Three grouped reads, each of the smallest rollup that answers it (store/rollup_shapes.py): the
series (its rows also sum to the totals), the top keys (GROUP BY key, LIMIT top), and one
scan per model/upstream/endpoint folded here into the three other breakdowns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.usage_models import (
    COUNTERS,
    MAX_GROUPS,
    KeyUsage,
    UsageGroup,
    UsageReport,
    UsageStats,
    check_bucket,
    check_limit,
    default_range,
    having_requests,
    rollup_source,
    stats_of,
    sums,
)
from tollway.services.usage_reports import series_points, series_rows
from tollway.store.tables import api_keys

DIMENSIONS = ("key_id", "model", "upstream", "endpoint")


class _Sums:
    __slots__ = tuple(COUNTERS)

    def __init__(self, values: Sequence[Any] | None = None) -> None:
        for name, value in zip(COUNTERS, values or [0] * len(COUNTERS), strict=True):
            setattr(self, name, value)

    def add(self, row: Any) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(row, name))


def _fold(rows: Sequence[Any], dim: int, first_counter: int) -> dict[Any, _Sums]:
    """Sum rows by their value at index `dim`; the counters are the row's values from
    `first_counter` on, in COUNTERS order (as `sums()` selects them). Positional and in
    lists: a report folds each of hundreds of rows three times."""
    acc: dict[Any, list[Any]] = {}
    for row in rows:
        value = row[dim]
        s = acc.get(value)
        if s is None:
            acc[value] = list(row[first_counter:])
        else:
            for i, v in enumerate(row[first_counter:]):
                s[i] += v
    return {value: _Sums(s) for value, s in acc.items()}


def _top(acc: dict[Any, _Sums], top: int) -> list[tuple[Any, _Sums]]:
    return sorted(acc.items(), key=lambda kv: (-kv[1].requests, kv[0]))[:top]  # type: ignore[attr-defined]


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
    breakdowns: bool = True,
) -> UsageReport:
    """Everything about a range in one call: totals, a time series (hour or day buckets,
    empty ones included), and the `top` keys, models, upstreams and endpoints by requests
    (unless `breakdowns` is False: totals and series only, as for a period compared with).
    Default range: the last 30 days (day buckets) or 24 hours (hour buckets)."""
    b = check_bucket(bucket)
    start, end = default_range(start, end, b)
    check_limit(top, MAX_GROUPS)
    f: dict[str, Any] = {"key_id": key_id, "model": model, "upstream": upstream}
    span = {"start": start, "end": end, **f}
    series_src = rollup_source(hourly_only=b == "hour", **span)
    keys_src = rollup_source(group=("key_id",), **span)
    dims_src = rollup_source(group=DIMENSIONS[1:], **span)
    dims = [dims_src.c[d] for d in DIMENSIONS[1:]]
    top_keys = (
        select(keys_src.c.key_id, *sums(keys_src.c))
        .group_by(keys_src.c.key_id)
        .having(having_requests(keys_src.c))
        .order_by(func.sum(keys_src.c.requests).desc(), keys_src.c.key_id)
        .limit(top)
    )
    key_rows: Sequence[Any] = []
    rows: Sequence[Any] = []
    names: dict[Any, Any] = {}
    async with engine.connect() as conn:
        series_rows_ = await series_rows(conn, series_src)
        if breakdowns:
            key_rows = (await conn.execute(top_keys)).all()
            by_dims = (
                select(*dims, *sums(dims_src.c)).group_by(*dims).having(having_requests(dims_src.c))
            )
            rows = (await conn.execute(by_dims)).all()
            ids = [int(r.key_id) for r in key_rows]
            found = select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix)
            names = {
                r.id: r for r in (await conn.execute(found.where(api_keys.c.id.in_(ids)))).all()
            }
    # The series covers exactly the range's hours: its rows add up to the totals.
    total = _Sums()
    for row in series_rows_:
        total.add(row)

    def groups(dim: str) -> list[UsageGroup]:
        folded = _fold(rows, DIMENSIONS.index(dim) - 1, len(dims))
        return [UsageGroup(name=v, **stats_of(s)) for v, s in _top(folded, top)]

    return UsageReport(
        start=start,
        end=end,
        bucket=b,
        **f,
        totals=UsageStats(**stats_of(total)),
        series=series_points(series_rows_, start, end, b),
        by_key=[
            KeyUsage(
                key_id=int(r.key_id),
                name=names[r.key_id].name if r.key_id in names else None,
                prefix=names[r.key_id].prefix if r.key_id in names else None,
                **stats_of(r),
            )
            for r in key_rows
        ],
        by_model=groups("model"),
        by_upstream=groups("upstream"),
        by_endpoint=groups("endpoint"),
    )
