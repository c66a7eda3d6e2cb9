"""What a key has used so far, from the hourly per-key usage rollups: the limits backends read this
once per key (when first seen) so budgets and token quotas survive restarts."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.store.queries import from_unix
from tollway.store.rollup_shapes import KEY, dims_is
from tollway.store.tables import usage_cube


async def key_spend(engine: AsyncEngine, key_id: int, since: float) -> tuple[int, float]:
    """(tokens used ever, USD spent since `since`). Budget periods start on UTC hours, so the
    hourly rollups split exactly at their boundaries."""
    r = usage_cube.c  # the per-key shape: one row per key and hour
    since_hour = from_unix(since)
    stmt = select(
        func.coalesce(func.sum(r.total_tokens), 0),
        func.coalesce(func.sum(case((r.hour >= since_hour, r.cost_usd), else_=0.0)), 0.0),
    ).where(dims_is(r.dims, KEY), r.key_id == key_id)
    async with engine.connect() as conn:
        tokens, cost = (await conn.execute(stmt)).one()
    return int(tokens), float(cost)
