"""Budget alerts: which keys are past which threshold this period, on SQLite and PostgreSQL.
The database sums and filters, so only keys past the lowest threshold are read."""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.types import UsageEvent
from tollway.services import keys as key_service
from tollway.services.alert_checks import budget_crossings
from tollway.store.db import create_engine, migrate
from tollway.store.usage_writer import write_usage

DAY = 1_800_000_000.0 - 8 * 3600  # 2027-01-15 00:00 UTC
NOW = DAY + 12 * 3600


async def _key(engine: AsyncEngine, name: str, **fields: object) -> int:
    return (await key_service.create_key(engine, {"name": name, **fields})).info.id


async def test_budget_crossings_per_period_and_threshold(engine: AsyncEngine) -> None:
    monthly = {"budget_usd": 1.0, "budget_period": "monthly"}
    half = await _key(engine, "half", **monthly)
    daily = await _key(engine, "daily", budget_usd=1.0, budget_period="daily")
    total = await _key(engine, "total", budget_usd=2.0, budget_period="none")
    off = await _key(engine, "off", **monthly)
    under = await _key(engine, "under", **monthly)
    free = await _key(engine, "free")
    await _key(engine, "unused", **monthly)
    await key_service.disable_key(engine, off)
    events = []
    for ts, key_id, cost in [
        (DAY + 60, half, 0.6),
        (DAY - 3600, daily, 5.0),  # yesterday: not in today's budget
        (DAY + 60, daily, 0.5),
        (DAY + 7200, daily, 0.4),
        (DAY - 40 * 86400, total, 2.0),  # last year: counts for an all-time budget
        (DAY + 60, total, 0.5),
        (DAY + 60, off, 5.0),
        (DAY + 60, under, 0.49),
        (DAY + 60, free, 10.0),
        (DAY - 20 * 86400, half, 9.0),  # December: not this month's
    ]:
        ev = UsageEvent(ts, f"r{len(events)}", key_id, "POST", "/v1/chat/completions")
        ev.model, ev.status, ev.cost_usd, ev.total_tokens = "m", 200, cost, 10
        events.append(ev)
    await write_usage(engine, events)

    found = await budget_crossings(engine, [50.0, 80.0, 100.0], NOW)
    got = sorted((c.subject, c.period, c.fields["percent"]) for c in found)
    assert got == sorted(
        [
            (f"key:{half}", "monthly 2027-01-01:50", 60.0),
            (f"key:{daily}", "daily 2027-01-15:50", 90.0),
            (f"key:{daily}", "daily 2027-01-15:80", 90.0),
            (f"key:{total}", "total:50", 125.0),
            (f"key:{total}", "total:80", 125.0),
            (f"key:{total}", "total:100", 125.0),
        ]
    )
    assert await budget_crossings(engine, [], NOW) == []
    # At the threshold (60 % of the monthly budget) counts as past it.
    at = {c.subject for c in await budget_crossings(engine, [60.0], NOW)}
    assert at == {f"key:{half}", f"key:{daily}", f"key:{total}"}


async def test_many_keys_with_budgets_are_not_read_one_by_one(tmp_path: Path) -> None:
    # 20,000 keys with a budget, one of them past it: the check reads that one, not all
    # (it used to fetch every budgeted key and send their ids back as one IN list).
    db = tmp_path / "k.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await migrate(engine)
        spender = await _key(engine, "spender", budget_usd=1.0, budget_period="monthly")
        con = sqlite3.connect(db)
        with con:
            con.executemany(
                "INSERT INTO api_keys (key_hash, prefix, name, enabled, created_at, updated_at,"
                " budget_usd, budget_period, response_cache) VALUES (?, 'tw-x', ?, 1,"
                " '2027-01-01 00:00:00.000000', '2027-01-01 00:00:00.000000', 1.0, 'monthly', 0)",
                [(f"{i:064x}", f"k{i}") for i in range(20_000)],
            )
        con.close()
        ev = UsageEvent(DAY + 60, "r", spender, "POST", "/v1/chat/completions")
        ev.model, ev.status, ev.cost_usd = "m", 200, 2.0
        await write_usage(engine, [ev])
        await budget_crossings(engine, [50.0], NOW)  # statement caches warm
        tracemalloc.start()
        found = await budget_crossings(engine, [50.0, 100.0], NOW)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        await engine.dispose()
    assert {c.subject for c in found} == {f"key:{spender}"} and len(found) == 2
    assert peak < 1_000_000, peak
