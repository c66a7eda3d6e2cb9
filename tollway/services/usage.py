"""Usage reports, the one API the admin API, CLI and web UI all call.

Sums, breakdowns and time series come from the hourly rollups (usage_reports); raw rows are
read only for "recent requests", the paginated record list and the CSV export
(usage_records). Everything is re-exported here: import `tollway.services.usage` only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, Subquery, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.services.errors import NotFound
from tollway.services.usage_detail import FailedAttempt, RequestDetail, filtered_totals, get_record
from tollway.services.usage_models import (
    BUCKETS,
    ORDERS,
    Bucket,
    KeyUsage,
    Order,
    UsageGroup,
    UsagePoint,
    UsageReport,
    UsageStats,
    UsageTotals,
    having_requests,
    rollup_source,
    stats_of,
    sums,
    totals_of,
)
from tollway.services.usage_records import (
    CSV_FIELDS,
    MAX_RECORDS_PAGE,
    RecordPage,
    UsageRecord,
    export_csv,
    list_records,
    record_filters,
)
from tollway.services.usage_records import (
    FIELDS as RECORD_FIELDS,
)
from tollway.services.usage_reports import (
    by_endpoint,
    by_key,
    by_model,
    by_upstream,
    timeseries,
    top_keys,
    top_models,
    totals,
)
from tollway.services.usage_summary import report
from tollway.store.queries import as_utc
from tollway.store.tables import api_keys, usage_records, usage_rollups

__all__ = [
    "BUCKETS",
    "CSV_FIELDS",
    "MAX_RECORDS_PAGE",
    "ORDERS",
    "RECORD_FIELDS",
    "Bucket",
    "FailedAttempt",
    "KeyStats",
    "KeyUsage",
    "Order",
    "RecentRequest",
    "RecordPage",
    "RequestDetail",
    "UsageGroup",
    "UsagePoint",
    "UsageRecord",
    "UsageReport",
    "UsageStats",
    "UsageTotals",
    "by_endpoint",
    "by_key",
    "by_model",
    "by_upstream",
    "export_csv",
    "filtered_totals",
    "get_record",
    "key_stats",
    "list_records",
    "report",
    "timeseries",
    "top_keys",
    "top_models",
    "totals",
]

r = usage_rollups.c


class RecentRequest(BaseModel):
    ts: datetime
    request_id: str
    method: str
    endpoint: str
    model: str | None
    upstream: str | None
    status: int
    stream: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    latency_ms: float | None


class KeyStats(BaseModel):
    key_id: int
    name: str
    totals: UsageTotals
    by_endpoint: list[UsageGroup]
    by_model: list[UsageGroup]
    recent: list[RecentRequest]


async def _groups(conn: AsyncConnection, stmt: Select[Any]) -> list[UsageGroup]:
    rows = (await conn.execute(stmt)).all()
    return [UsageGroup(name=row.name, **stats_of(row)) for row in rows]


def _grouped(src: Subquery, column: str) -> Select[Any]:
    col = src.c[column]
    return (
        select(col.label("name"), *sums(src.c))
        .group_by(col)
        .having(having_requests(src.c))
        .order_by(func.sum(src.c.requests).desc(), col)
    )


async def key_stats(
    engine: AsyncEngine,
    key_id: int,
    recent: int = 10,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> KeyStats:
    """Totals, per-endpoint and per-model breakdowns, and the last `recent` requests of a key
    (the seed's `key-stats`). All time unless start/end narrow it (whole hours for the sums)."""

    def src(*group: str) -> Subquery:
        return rollup_source(start=start, end=end, key_id=key_id, group=group)

    async with engine.connect() as conn:
        name = (await conn.execute(select(api_keys.c.name).where(api_keys.c.id == key_id))).scalar()
        if name is None:
            raise NotFound(f"no key with id {key_id}")
        totals_row = (await conn.execute(select(*sums(src().c)))).one()
        by_endpoint = await _groups(conn, _grouped(src("endpoint"), "endpoint"))
        by_model = await _groups(conn, _grouped(src("model"), "model"))
        u = usage_records.c
        recent_rows = (
            await conn.execute(
                select(
                    u.ts,
                    u.request_id,
                    u.method,
                    u.endpoint,
                    u.model,
                    u.upstream,
                    u.status,
                    u.stream,
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.total_tokens,
                    u.cost_usd,
                    u.latency_ms,
                )
                .where(*record_filters(start=start, end=end, key_id=key_id))
                .order_by(u.ts.desc(), u.id.desc())
                .limit(max(recent, 0))
            )
        ).all()
    return KeyStats(
        key_id=key_id,
        name=str(name),
        totals=UsageTotals(**totals_of(totals_row)),
        by_endpoint=by_endpoint,
        by_model=by_model,
        recent=[
            RecentRequest(**{**row._asdict(), "ts": as_utc(row.ts), "stream": bool(row.stream)})
            for row in recent_rows
        ],
    )
