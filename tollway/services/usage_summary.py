"""The one-call usage report (`tollway usage`, the dashboard, GET /admin/api/usage).

Its four breakdowns and the totals come from ONE grouped scan of the rollups (one row per
key/model/upstream/endpoint combination seen in the range), folded here; six separate GROUP BY
queries would each re-read the range. The series is a second query.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
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
    rollup_source,
    stats_of,
    sums,
)
from tollway.services.usage_reports import _series
from tollway.store.tables import api_keys

DIMENSIONS = ("key_id", "model", "upstream", "endpoint")


class _Sums:
    __slots__ = tuple(COUNTERS)

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def add(self, row: Any) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(row, name))


def _fold(rows: Sequence[Any], dim: str) -> dict[Any, _Sums]:
    acc: dict[Any, _Sums] = {}
    for row in rows:
        value = getattr(row, dim)
        s = acc.get(value)
        if s is None:
            s = acc[value] = _Sums()
        s.add(row)
    return acc


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
) -> UsageReport:
    """Everything about a range in one call: totals, a time series (hour or day buckets,
    empty ones included), and the `top` keys, models, upstreams and endpoints by requests.
    Default range: the last 30 days (day buckets) or 24 hours (hour buckets)."""
    b = check_bucket(bucket)
    start, end = default_range(start, end, b)
    check_limit(top, MAX_GROUPS)
    f: dict[str, Any] = {"key_id": key_id, "model": model, "upstream": upstream}
    src = rollup_source(start=start, end=end, **f)
    series_src = src if b == "day" else rollup_source(start=start, end=end, hourly_only=True, **f)
    cols = [src.c[d] for d in DIMENSIONS]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(*cols, *sums(src.c)).group_by(*cols))).all()
        series = await _series(conn, start, end, b, series_src)
        top_keys = _top(_fold(rows, "key_id"), top)
        ids = [k for k, _ in top_keys]
        names = {
            r.id: r
            for r in (
                await conn.execute(
                    select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix).where(
                        api_keys.c.id.in_(ids)
                    )
                )
            ).all()
        }
    total = _Sums()
    for row in rows:
        total.add(row)

    def groups(dim: str) -> list[UsageGroup]:
        return [UsageGroup(name=v, **stats_of(s)) for v, s in _top(_fold(rows, dim), top)]

    return UsageReport(
        start=start,
        end=end,
        bucket=b,
        **f,
        totals=UsageStats(**stats_of(total)),
        series=series,
        by_key=[
            KeyUsage(
                key_id=int(k),
                name=names[k].name if k in names else None,
                prefix=names[k].prefix if k in names else None,
                **stats_of(s),
            )
            for k, s in top_keys
        ],
        by_model=groups("model"),
        by_upstream=groups("upstream"),
        by_endpoint=groups("endpoint"),
    )
