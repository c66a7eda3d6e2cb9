"""Manual balances' spend in the database: one `kv` row holding {account: [balance, spent]},
changed in one transaction that locks the row (PostgreSQL `FOR UPDATE`; SQLite has one writer
at a time), so instances adding their spend at once never lose one another's."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from .queries import upsert
from .tables import kv

SPEND_KEY = "upstreams.manual_spend"
Totals = dict[str, tuple[float, float]]  # account -> (manual balance, spent)


def _parse(raw: str | None) -> Totals:
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    out: Totals = {}
    if isinstance(data, dict):
        for name, pair in data.items():
            if isinstance(pair, list) and len(pair) == 2:
                try:
                    out[str(name)] = (float(pair[0]), float(pair[1]))
                except (TypeError, ValueError):
                    continue
    return out


async def read_spend(engine: AsyncEngine) -> Totals:
    async with engine.connect() as conn:
        raw = (await conn.execute(select(kv.c.value).where(kv.c.key == SPEND_KEY))).scalar()
    return _parse(raw)


async def _update(engine: AsyncEngine, change: Callable[[Totals], bool]) -> Totals:
    async with engine.begin() as conn:
        # The row exists before it is locked: two first writers must not both insert it.
        await conn.execute(
            upsert(conn, kv).values(key=SPEND_KEY, value="{}").on_conflict_do_nothing()
        )
        query = select(kv.c.value).where(kv.c.key == SPEND_KEY).with_for_update()
        totals = _parse((await conn.execute(query)).scalar())
        if change(totals):
            value = orjson.dumps(
                {k: list(v) for k, v in totals.items()}, option=orjson.OPT_SORT_KEYS
            ).decode()
            stmt = upsert(conn, kv).values(key=SPEND_KEY, value=value)
            stmt = stmt.on_conflict_do_update(index_elements=[kv.c.key], set_={"value": value})
            await conn.execute(stmt)
    return totals


async def add_spend(engine: AsyncEngine, deltas: dict[tuple[str, float], float]) -> Totals:
    """Adds each account's new spend (for its current balance) and returns every total."""

    def change(totals: Totals) -> bool:
        for (name, base), delta in deltas.items():
            if not delta:
                continue
            old_base, spent = totals.get(name, (base, 0.0))
            totals[name] = (base, (spent if old_base == base else 0.0) + delta)
        return any(deltas.values())

    return await _update(engine, change)


async def raise_spend(engine: AsyncEngine, totals_in: dict[tuple[str, float], float]) -> Totals:
    """Stores totals counted elsewhere (Redis), never lowering one already stored."""

    def change(totals: Totals) -> bool:
        changed = False
        for (name, base), total in totals_in.items():
            old_base, spent = totals.get(name, (base, 0.0))
            if old_base != base or total > spent:
                totals[name] = (base, total)
                changed = True
        return changed

    return await _update(engine, change)
