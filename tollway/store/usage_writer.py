"""Writes a batch of usage events: raw rows, rollups (hourly, daily, the narrower cube and
latency histograms: store/usage_slices.py) and keys' last use, in one transaction.

Called by the gateway's background usage sink, never on the request path.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.core.types import UsageEvent
from tollway.store.queries import from_unix
from tollway.store.tables import api_keys, usage_records, usage_rollups, usage_rollups_daily
from tollway.store.upsert_rows import add_rows
from tollway.store.usage_clean import clean
from tollway.store.usage_slices import Sample, write_slices

log = logging.getLogger("tollway.usage")

RollupKey = tuple[datetime, int, str, str, str]  # hour, key_id, model, upstream, endpoint


def is_client_error(status: int, error_type: str | None) -> bool:
    """Refused by Tollway itself (auth, limits, a bad request, an unknown model, a client that
    left): a 4xx that is not an upstream's answer passed through."""
    return 400 <= status < 500 and error_type != "upstream_error"


@dataclass(slots=True)
class _Rollup:
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms_sum: float = 0.0

    def add(self, ev: UsageEvent) -> None:
        self.requests += 1
        self.errors += ev.status >= 400
        self.client_errors += is_client_error(ev.status, ev.error_type)
        self.prompt_tokens += ev.prompt_tokens or 0
        self.completion_tokens += ev.completion_tokens or 0
        self.total_tokens += ev.total_tokens or 0
        self.cost_usd += ev.cost_usd or 0.0
        self.latency_ms_sum += ev.latency_ms or 0.0


_COUNTERS = tuple(_Rollup.__dataclass_fields__)


async def write_usage(
    engine: AsyncEngine, events: list[UsageEvent], dead_letter: Path | None = None
) -> None:
    """Write a batch; if the database refuses it for its content (not for being down), split it
    down to the refused rows: those go to `dead_letter` (a file, logged at ERROR), every other
    row is written."""
    if not events:
        return
    events = [clean(ev) for ev in events]
    try:
        await _write_batch(engine, events)
    except Exception as exc:
        if not _refused_for_content(exc):
            raise
        if len(events) == 1:
            _bury(events[0], exc, dead_letter)
            return
        log.warning("usage batch of %d refused (%r): splitting it", len(events), exc)
        half = len(events) // 2
        await write_usage(engine, events[:half], dead_letter)
        await write_usage(engine, events[half:], dead_letter)


def _refused_for_content(exc: BaseException) -> bool:
    """The database (or the driver) refuses a value: split the batch to find it. Anything else
    (down, locked, schema missing) is retried whole later, never split."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        if isinstance(exc, DataError | IntegrityError):
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        # SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation)
        return isinstance(code, str) and code[:2] in ("22", "23")
    cause = exc.orig if isinstance(exc, StatementError) else exc
    # A value the driver or Python cannot convert (an int past 64 bits, a time out of range).
    return isinstance(cause, ValueError | TypeError | OverflowError)


def _bury(ev: UsageEvent, exc: BaseException, dead_letter: Path | None) -> None:
    log.error("usage event %s refused even cleaned (%r)", ev.request_id, exc)
    if dead_letter is None:
        raise exc
    line = orjson.dumps({"error": repr(exc)[:500], "event": ev}, default=str) + b"\n"
    fd = os.open(dead_letter, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.error("usage event %s kept in %s", ev.request_id, dead_letter)


async def _write_batch(engine: AsyncEngine, events: list[UsageEvent]) -> None:
    async with engine.begin() as conn:
        known = await _existing_keys(conn, {ev.key_id for ev in events if ev.key_id is not None})
        rows: list[tuple[Any, ...]] = []
        for ev in events:
            # A key deleted while its events sat in the queue: keep the usage, drop the link
            # (the foreign key would otherwise reject the whole batch).
            key_id = ev.key_id if ev.key_id in known else None
            rows.append(_record(ev, from_unix(ev.ts), key_id))
        # Rollups and last use count only the rows inserted now: a replayed or retried event
        # already in the table is skipped by the insert and must not be counted twice.
        inserted = await _insert_records(conn, rows)
        rollups: dict[RollupKey, _Rollup] = {}
        samples: list[Sample] = []  # for the latency histograms
        last_used: dict[int, datetime] = {}
        for ev, row in zip(events, rows, strict=True):
            if ev.request_id not in inserted:
                continue
            ts, key_id = row[0], row[2]
            hour = ts.replace(minute=0, second=0, microsecond=0)
            rk = (hour, key_id or 0, ev.model or "", ev.upstream or "", ev.endpoint)
            rollup = rollups.get(rk)
            if rollup is None:
                rollup = rollups[rk] = _Rollup()
            rollup.add(ev)
            if ev.latency_ms is not None:
                samples.append((hour, rk[1], rk[2], rk[3], ev.latency_ms))
            if key_id is not None and (key_id not in last_used or ts > last_used[key_id]):
                last_used[key_id] = ts
        if rollups:
            await _upsert_rollups(conn, usage_rollups, "hour", rollups)
            await _upsert_rollups(conn, usage_rollups_daily, "day", _by_day(rollups))
            await write_slices(conn, rollups, samples)  # type: ignore[arg-type]
        await _touch_keys(conn, last_used)


async def _existing_keys(conn: AsyncConnection, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    result = await conn.execute(select(api_keys.c.id).where(api_keys.c.id.in_(sorted(ids))))
    return set(result.scalars())


# The raw row's columns, in the order `_record` gives their values.
RECORD_COLUMNS = (
    "ts",
    "request_id",
    "key_id",
    "method",
    "endpoint",
    "model",
    "upstream",
    "upstream_model",
    "status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "error_type",
    "fallback_from",
    "admitted_ms",
    "first_byte_ms",
    "error_message",
    "failures",
    "cache_hit",
)


def _record(ev: UsageEvent, ts: datetime, key_id: int | None) -> tuple[Any, ...]:
    return (
        ts,
        ev.request_id,
        key_id,
        ev.method,
        ev.endpoint,
        ev.model,
        ev.upstream,
        ev.upstream_model,
        ev.status,
        ev.stream,
        ev.prompt_tokens,
        ev.completion_tokens,
        ev.total_tokens,
        ev.cached_tokens,
        ev.cache_write_tokens,
        ev.reasoning_tokens,
        ev.cost_usd,
        ev.latency_ms,
        ev.ttft_ms,
        ev.attempts,
        ev.error_type,
        ev.fallback_from,
        ev.admitted_ms,
        ev.first_byte_ms,
        ev.error_message,
        orjson.dumps(ev.failures).decode() if ev.failures else None,
        ev.cache_hit,
    )


@dataclass(frozen=True, slots=True)
class _Insert:
    """The raw-row INSERT's pieces compiled once per dialect, with its value converters."""

    head: str  # INSERT INTO usage_records (...) VALUES
    group: str  # one row's placeholders, "(?, ?, ...)" or "($1::..., ...)"
    numbered: bool  # PostgreSQL's $n placeholders are renumbered for each row
    order: tuple[int, ...]  # for each placeholder, its value's index in a `_record` tuple
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]  # (index, converter) where needed

    def sql(self, rows: int) -> str:
        width = len(self.order)
        if self.numbered:
            groups = [_renumber(self.group, r * width) for r in range(rows)]
        else:
            groups = [self.group] * rows
        return (
            f"{self.head} {', '.join(groups)}"
            " ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
        )


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _renumber(group: str, offset: int) -> str:
    return _PLACEHOLDER.sub(lambda m: f"${int(m[1]) + offset}", group)


_INSERTS: dict[str, _Insert] = {}
_SQL: dict[tuple[str, int], str] = {}
ROWS_PER_STATEMENT = 200  # 5,000 parameters: well inside SQLite's and PostgreSQL's limits


def _compiled_insert(dialect: Dialect) -> _Insert:
    found = _INSERTS.get(dialect.name)
    if found is None:
        stmt = usage_records.insert().values({name: bindparam(name) for name in RECORD_COLUMNS})
        compiled = stmt.compile(dialect=dialect)
        text = str(compiled).split(" RETURNING ")[0]
        head, group = text.split(" VALUES ", 1)
        names = compiled.positiontup or []
        convert = []
        for i, name in enumerate(RECORD_COLUMNS):
            processor = usage_records.c[name].type._cached_bind_processor(dialect)
            if processor is not None:
                convert.append((i, processor))
        order = tuple(RECORD_COLUMNS.index(name) for name in names)
        found = _Insert(f"{head} VALUES", group, "$1" in group, order, tuple(convert))
        _INSERTS[dialect.name] = found
    return found


async def _insert_records(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str]:
    """Multi-row INSERT … ON CONFLICT (request_id) DO NOTHING RETURNING, straight to the
    driver (SQLAlchemy's per-row parameter building cost more than the database's own work,
    about 30 µs a row; bench/README.md). Returns the request ids actually inserted."""
    insert = _compiled_insert(conn.dialect)
    inserted: set[str] = set()
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        params: list[Any] = []
        for row in chunk:
            values = list(row)
            for i, processor in insert.convert:
                if values[i] is not None:
                    values[i] = processor(values[i])
            params.extend(values[i] for i in insert.order)
        key = (conn.dialect.name, len(chunk))
        sql = _SQL.get(key)
        if sql is None:
            sql = _SQL[key] = insert.sql(len(chunk))
        result = await conn.exec_driver_sql(sql, tuple(params))
        inserted.update(r[0] for r in result.fetchall())
    return inserted


def _by_day(rollups: dict[RollupKey, _Rollup]) -> dict[RollupKey, _Rollup]:
    days: dict[RollupKey, _Rollup] = {}
    for (hour, key_id, model, upstream, endpoint), r in rollups.items():
        dk = (hour.replace(hour=0), key_id, model, upstream, endpoint)
        d = days.get(dk)
        if d is None:
            d = days[dk] = _Rollup()
        for name in _COUNTERS:
            setattr(d, name, getattr(d, name) + getattr(r, name))
    return days


async def _upsert_rollups(
    conn: AsyncConnection, table: Table, bucket: str, rollups: dict[RollupKey, _Rollup]
) -> None:
    # Sorted so concurrent writers (several instances on PostgreSQL) lock rows in one order.
    keys = (bucket, "key_id", "model", "upstream", "endpoint")
    rows = [(*rk, *(getattr(r, name) for name in _COUNTERS)) for rk, r in sorted(rollups.items())]
    await add_rows(conn, table, keys, _COUNTERS, rows)


async def _touch_keys(conn: AsyncConnection, last_used: dict[int, datetime]) -> None:
    if not last_used:
        return
    b_ts = bindparam("b_ts", type_=api_keys.c.last_used_at.type)
    stmt = (
        update(api_keys)
        .where(
            and_(
                api_keys.c.id == bindparam("b_id"),
                # Only forward: an older batch flushed late must not move it back.
                or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < b_ts),
            )
        )
        .values(last_used_at=b_ts)
    )
    await conn.execute(stmt, [{"b_id": k, "b_ts": ts} for k, ts in sorted(last_used.items())])
