"""Raw usage records: a filtered, paginated list and a streamed CSV export.

The only usage reads that touch raw rows. Pagination is by keyset (`cursor` = the last id
seen), newest first, so page 10,000 costs the same as page 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Unpack

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.csv_cells import cell
from tollway.services.errors import Invalid
from tollway.services.usage_filters import RecordFilters, where_terms
from tollway.services.usage_models import check_limit, check_range
from tollway.store.queries import as_utc
from tollway.store.tables import api_keys, usage_records

u = usage_records.c
MAX_RECORDS_PAGE = 1000
EXPORT_BATCH = 5000


class UsageRecord(BaseModel):
    id: int
    ts: datetime
    request_id: str
    key_id: int | None
    method: str
    endpoint: str
    model: str | None
    upstream: str | None
    upstream_model: str | None
    status: int
    stream: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    latency_ms: float | None
    ttft_ms: float | None
    attempts: int
    error_type: str | None
    fallback_from: str | None
    error_message: str | None = None  # failed rows: what the client was told (500 chars)


FIELDS = tuple(UsageRecord.model_fields)
_COLUMNS = [u[name] for name in FIELDS]
# The CSV also names each row's key (empty when none, or deleted), next to its id.
CSV_FIELDS = (*FIELDS[:4], "key_name", *FIELDS[4:])


class RecordPage(BaseModel):
    items: list[UsageRecord]
    limit: int
    next_cursor: int | None  # pass as `cursor` for the next (older) page; None = no more


# `status >= 400` with the number in the SQL text: the term the partial index of failed rows
# is defined by (ix_usage_records_errors_ts), which the planners match only as written.
ERRORS_ONLY = u.status >= literal_column("400")


def status_filter(status: str) -> ColumnElement[bool]:
    """ "429" exact code, "4xx" a class, "ok" (< 400) or "error" (>= 400). Every filter that
    keeps only failed requests includes ERRORS_ONLY, so it can read the index of those."""
    s = status.strip().lower()
    if s == "ok":
        return u.status < 400
    if s == "error":
        return ERRORS_ONLY
    if len(s) == 3 and s[0] in "12345" and s[1:] == "xx":
        base = int(s[0]) * 100
        term = and_(u.status >= base, u.status < base + 100)
        return and_(ERRORS_ONLY, term) if base >= 400 else term
    if s.isdigit() and 100 <= int(s) <= 599:
        code = u.status == int(s)
        return and_(ERRORS_ONLY, code) if int(s) >= 400 else code
    raise Invalid("status must be a code like 429, a class like 5xx, or ok / error")


def record_filters(**filters: Unpack[RecordFilters]) -> list[ColumnElement[bool]]:
    """WHERE terms over raw rows: exact [start, end) times, not whole hours."""
    start, end = check_range(filters.get("start"), filters.get("end"))
    request_id = (filters.get("request_id") or "").strip() or None
    if request_id is not None and len(request_id) > 64:
        raise Invalid("request id: at most 64 characters")
    names = ("key_id", "model", "upstream")
    equal = [(u[name], filters.get(name)) for name in names] + [(u.request_id, request_id)]
    conds = where_terms(u.ts, start, end, equal)
    status = filters.get("status")
    if status:
        conds.append(status_filter(status))
    return conds


def _record(row: Any) -> UsageRecord:
    data = row._asdict()
    data["ts"] = as_utc(row.ts)
    data["stream"] = bool(row.stream)
    return UsageRecord(**data)


async def list_records(
    engine: AsyncEngine,
    *,
    cursor: int | None = None,
    limit: int = 50,
    **filters: Unpack[RecordFilters],
) -> RecordPage:
    """A page of raw usage rows, newest first. `status`: see status_filter."""
    check_limit(limit, MAX_RECORDS_PAGE)
    conds = record_filters(**filters)
    if cursor is not None:
        conds.append(u.id < cursor)
    stmt = select(*_COLUMNS).where(and_(true(), *conds)).order_by(u.id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    items = [_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    return RecordPage(items=items, limit=limit, next_cursor=items[-1].id if more else None)


async def export_csv(
    engine: AsyncEngine,
    *,
    batch: int = EXPORT_BATCH,
    **filters: Unpack[RecordFilters],
) -> AsyncIterator[str]:
    """A CSV (header first, then rows in the order written) as an async iterator of text
    chunks of up to `batch` rows: `async for chunk in await export_csv(engine, ...)`.

    Each chunk is its own short query (keyset on id), so a long download never holds a
    database connection or a lock while the client reads slowly. Filters are validated
    before the first chunk, so a bad filter fails before any output is sent.
    """
    conds = record_filters(**filters)
    return _export(engine, conds, batch)


async def _export(
    engine: AsyncEngine, conds: list[ColumnElement[bool]], batch: int
) -> AsyncIterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    yield _flush(buf)
    last = 0
    columns = [*_COLUMNS, api_keys.c.name.label("key_name")]
    source = usage_records.outerjoin(api_keys, api_keys.c.id == u.key_id)
    while True:
        stmt = (
            select(*columns)
            .select_from(source)
            .where(and_(true(), u.id > last, *conds))
            .order_by(u.id)
            .limit(batch)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            return
        for row in rows:
            rec = row._asdict()
            rec["ts"] = as_utc(row.ts).isoformat()
            rec["stream"] = bool(row.stream)
            # Text that could be a formula is escaped; an unknown cost is "—", never 0 or blank.
            writer.writerow(
                ["—" if f == "cost_usd" and rec[f] is None else cell(rec[f]) for f in CSV_FIELDS]
            )
        yield _flush(buf)
        last = int(rows[-1].id)


def _flush(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text
