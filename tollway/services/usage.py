"""Usage reports. Totals come from the hourly rollups; raw rows only for the "recent" list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.services.errors import NotFound
from tollway.store.queries import as_utc
from tollway.store.tables import api_keys, usage_records, usage_rollups

r = usage_rollups.c


class UsageTotals(BaseModel):
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


class UsageGroup(UsageTotals):
    name: str  # endpoint or model; "" = requests without a model


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


# SUM over BIGINT is NUMERIC on PostgreSQL (Decimal in Python); cast back when building models.
_SUMS = (
    func.coalesce(func.sum(r.requests), 0).label("requests"),
    func.coalesce(func.sum(r.errors), 0).label("errors"),
    func.coalesce(func.sum(r.prompt_tokens), 0).label("prompt_tokens"),
    func.coalesce(func.sum(r.completion_tokens), 0).label("completion_tokens"),
    func.coalesce(func.sum(r.total_tokens), 0).label("total_tokens"),
    func.coalesce(func.sum(r.cost_usd), 0.0).label("cost_usd"),
)


def _totals(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests),
        "errors": int(row.errors),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "total_tokens": int(row.total_tokens),
        "cost_usd": float(row.cost_usd),
    }


async def _groups(conn: AsyncConnection, stmt: Select[Any]) -> list[UsageGroup]:
    rows = (await conn.execute(stmt)).all()
    return [UsageGroup(name=row.name, **_totals(row)) for row in rows]


def _grouped(key_id: int, column: Any) -> Select[Any]:
    return (
        select(column.label("name"), *_SUMS)
        .where(r.key_id == key_id)
        .group_by(column)
        .order_by(func.sum(r.requests).desc(), column)
    )


async def key_stats(engine: AsyncEngine, key_id: int, recent: int = 10) -> KeyStats:
    """Totals, per-endpoint and per-model breakdowns, and the last `recent` requests of a key."""
    async with engine.connect() as conn:
        name = (await conn.execute(select(api_keys.c.name).where(api_keys.c.id == key_id))).scalar()
        if name is None:
            raise NotFound(f"no key with id {key_id}")
        totals_row = (await conn.execute(select(*_SUMS).where(r.key_id == key_id))).one()
        by_endpoint = await _groups(conn, _grouped(key_id, r.endpoint))
        by_model = await _groups(conn, _grouped(key_id, r.model))
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
                .where(u.key_id == key_id)
                .order_by(u.ts.desc(), u.id.desc())
                .limit(max(recent, 0))
            )
        ).all()
    return KeyStats(
        key_id=key_id,
        name=str(name),
        totals=UsageTotals(**_totals(totals_row)),
        by_endpoint=by_endpoint,
        by_model=by_model,
        recent=[
            RecentRequest(**{**row._asdict(), "ts": as_utc(row.ts), "stream": bool(row.stream)})
            for row in recent_rows
        ],
    )
