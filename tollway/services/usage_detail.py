"""One request in full (timing, attempts, tokens, cost, fallback), and the totals of a
filtered set of requests: what the usage explorer shows above its list."""

from __future__ import annotations

from typing import Any, Unpack

import orjson
from pydantic import BaseModel
from sqlalchemy import and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid, NotFound
from tollway.services.usage_filters import RecordFilters
from tollway.services.usage_models import UsageStats, hour_floor
from tollway.services.usage_records import _COLUMNS, UsageRecord, _record, record_filters
from tollway.services.usage_reports import totals as rollup_totals
from tollway.store.tables import api_keys, usage_records

u = usage_records.c


class FailedAttempt(BaseModel):
    upstream: str | None
    model: str | None
    outcome: str  # "timeout", "connection failed", "HTTP 503", "HTTP 402 out of credit"...


class RequestDetail(UsageRecord):
    key_name: str | None  # None when the request had no key or the key was deleted
    admitted_ms: float | None  # ms from the request's start until the limits admitted it
    first_byte_ms: float | None  # ... until the served upstream's response head arrived
    failed_attempts: list[FailedAttempt]  # before the answer (or all of them, if none came)


def _failed(text: str | None) -> list[FailedAttempt]:
    if not text:
        return []
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, list) and len(item) == 3:
            out.append(FailedAttempt(upstream=item[0], model=item[1], outcome=str(item[2])))
    return out


async def get_record(engine: AsyncEngine, request_id: str) -> RequestDetail:
    """The request with this id (the `x-request-id` Tollway answered it with)."""
    request_id = request_id.strip()
    if not request_id or len(request_id) > 64:
        raise Invalid("request id: 1 to 64 characters")
    stmt = (
        select(
            *_COLUMNS,
            api_keys.c.name.label("key_name"),
            u.admitted_ms,
            u.first_byte_ms,
            u.failures,
        )
        .select_from(usage_records.outerjoin(api_keys, api_keys.c.id == u.key_id))
        .where(u.request_id == request_id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound(f"no request with id {request_id} (recent ones may take a second)")
    base = _record(row).model_dump()
    return RequestDetail(
        **base,
        key_name=row.key_name,
        admitted_ms=row.admitted_ms,
        first_byte_ms=row.first_byte_ms,
        failed_attempts=_failed(row.failures),
    )


def _whole_hour(dt: Any) -> bool:
    return dt is None or dt == hour_floor(dt)


async def filtered_totals(engine: AsyncEngine, **filters: Unpack[RecordFilters]) -> UsageStats:
    """Totals of exactly the requests the record list shows for these filters. From the
    rollups when they answer exactly (no status or request id filter, whole-hour bounds), so
    the explorer's default view never scans raw rows; else one SUM over the filtered rows."""
    conds = record_filters(**filters)  # validates every filter first
    start, end = filters.get("start"), filters.get("end")
    if (
        not filters.get("status")
        and not (filters.get("request_id") or "").strip()
        and _whole_hour(start)
        and _whole_hour(end)
    ):
        return await rollup_totals(
            engine,
            start=start,
            end=end,
            key_id=filters.get("key_id"),
            model=filters.get("model"),
            upstream=filters.get("upstream"),
        )
    stmt = select(
        func.count().label("requests"),
        func.coalesce(func.sum(case((u.status >= 400, 1), else_=0)), 0).label("errors"),
        func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(u.total_tokens), 0).label("total_tokens"),
        func.coalesce(func.sum(u.cost_usd), 0.0).label("cost_usd"),
        func.coalesce(func.sum(u.latency_ms), 0.0).label("latency_ms_sum"),
    ).where(and_(true(), *conds))
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).one()
    n = int(row.requests)
    return UsageStats(
        requests=n,
        errors=int(row.errors),
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        total_tokens=int(row.total_tokens),
        cost_usd=float(row.cost_usd),
        avg_latency_ms=float(row.latency_ms_sum) / n if n else None,
    )
