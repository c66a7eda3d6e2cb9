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
    return (await keys_spend(engine, [key_id], since))[key_id]


async def keys_spend(
    engine: AsyncEngine, key_ids: list[int], since: float
) -> dict[int, tuple[int, float]]:
    """key_spend for many keys in one query (keys first seen together: a restart, a burst of
    new keys). Every id asked is in the answer, (0, 0.0) when it has no usage."""
    r = usage_cube.c  # the per-key shape: one row per key and hour
    since_hour = from_unix(since)
    stmt = (
        select(
            r.key_id,
            func.coalesce(func.sum(r.total_tokens), 0),
            func.coalesce(func.sum(case((r.hour >= since_hour, r.cost_usd), else_=0.0)), 0.0),
        )
        .where(dims_is(r.dims, KEY), r.key_id.in_(key_ids))
        .group_by(r.key_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    found = {int(key_id): (int(tokens), float(cost)) for key_id, tokens, cost in rows}
    return {key_id: found.get(key_id, (0, 0.0)) for key_id in key_ids}
