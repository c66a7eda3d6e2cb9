"""One request in full (timing, attempts, tokens, cost, fallback), and the totals of a
filtered set of requests: what the usage explorer shows above its list."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any, Unpack

import orjson
from pydantic import BaseModel
from sqlalchemy import and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid, NotFound
from tollway.services.usage_filters import RecordFilters
from tollway.services.usage_models import (
    COUNTERS,
    UsageStats,
    check_range,
    hour_floor,
    rollup_source,
    sums,
)
from tollway.services.usage_records import _COLUMNS, UsageRecord, _record, record_filters
from tollway.store.tables import api_keys, usage_records

u = usage_records.c
HOUR = timedelta(hours=1)


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
    """Totals of exactly the requests the record list shows for these filters.

    Without a status or request id filter: the rollups for the whole hours of the range and
    one SUM over raw rows for the minutes before its first and after its last whole hour (the
    explorer's range is to the minute), so the default view never scans raw rows and a range
    of days reads at most two hours of them. With a status or request id filter (neither is a
    rollup dimension): one SUM over the filtered raw rows, through the time, key and request
    id indexes; failed requests through the index of failed rows alone, and "ok" as all the
    requests less the failed ones."""
    return _stats(await _sum_rows(engine, filters))


async def _sum_rows(engine: AsyncEngine, filters: RecordFilters) -> list[Any]:
    """Rows of sums that add up to the filtered totals (rows with negative sums subtract)."""
    conds = record_filters(**filters)  # validates every filter first
    status = (filters.get("status") or "").strip().lower()
    if (filters.get("request_id") or "").strip():
        return await _raw_sums(engine, conds)
    if status == "ok":  # ~97 % of the rows: everything (rollups) less the failed few
        everything = await _sum_rows(engine, {**filters, "status": None})
        failed = await _sum_rows(engine, {**filters, "status": "error"})
        return everything + [_negated(row) for row in failed]
    if status:
        return await _raw_sums(engine, conds)
    start, end = check_range(filters.get("start"), filters.get("end"))
    # The whole hours inside [start, end): rollups; the minutes around them: raw rows.
    inner_lo = start if start is None or _whole_hour(start) else hour_floor(start) + HOUR
    inner_hi = end if end is None else hour_floor(end)
    narrow: dict[str, Any] = {k: filters.get(k) for k in ("key_id", "model", "upstream")}
    if inner_lo is not None and inner_hi is not None and inner_lo >= inner_hi:
        # No whole hour inside: a short range of raw rows.
        return await _raw_sums(engine, conds)
    src = rollup_source(start=inner_lo, end=inner_hi, **narrow)
    parts = [select(*sums(src.c))]
    edges = []
    if inner_lo != start:
        edges.append(record_filters(start=start, end=inner_lo, **narrow))
    if inner_hi != end:
        edges.append(record_filters(start=inner_hi, end=end, **narrow))
    async with engine.connect() as conn:
        rows = [(await conn.execute(stmt)).one() for stmt in parts]
        rows += [(await conn.execute(_raw_stmt(edge))).one() for edge in edges]
    return rows


def _negated(row: Any) -> SimpleNamespace:
    return SimpleNamespace(**{name: -(getattr(row, name) or 0) for name in COUNTERS})


def _raw_stmt(conds: list[Any]) -> Any:
    client = and_(u.status >= 400, u.status < 500, u.error_type.is_distinct_from("upstream_error"))
    return select(
        func.count().label("requests"),
        func.coalesce(func.sum(case((u.status >= 400, 1), else_=0)), 0).label("errors"),
        func.coalesce(func.sum(case((client, 1), else_=0)), 0).label("client_errors"),
        func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(u.total_tokens), 0).label("total_tokens"),
        func.coalesce(func.sum(u.cost_usd), 0.0).label("cost_usd"),
        func.coalesce(func.sum(u.latency_ms), 0.0).label("latency_ms_sum"),
    ).where(and_(true(), *conds))


async def _raw_sums(engine: AsyncEngine, conds: list[Any]) -> list[Any]:
    async with engine.connect() as conn:
        return [(await conn.execute(_raw_stmt(conds))).one()]


def _stats(rows: list[Any]) -> UsageStats:
    """Rows of sums (rollup and raw alike) added up."""
    acc: dict[str, float] = dict.fromkeys(COUNTERS, 0)
    for row in rows:  # SUM is NUMERIC (Decimal) on PostgreSQL
        for name in COUNTERS:
            value = getattr(row, name) or 0
            acc[name] += float(value) if name in ("cost_usd", "latency_ms_sum") else int(value)
    n = int(acc["requests"])
    return UsageStats(
        requests=n,
        errors=int(acc["errors"]),
        client_errors=int(acc["client_errors"]),
        prompt_tokens=int(acc["prompt_tokens"]),
        completion_tokens=int(acc["completion_tokens"]),
        total_tokens=int(acc["total_tokens"]),
        cost_usd=float(acc["cost_usd"]),
        avg_latency_ms=float(acc["latency_ms_sum"]) / n if n else None,
    )
