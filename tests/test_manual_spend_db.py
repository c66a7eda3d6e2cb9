"""Without Redis, manual balances' spend is added to the database atomically: instances that
save at the same time lose none of each other's spend and end up reporting the same balance."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.store.manual_spend import add_spend, raise_spend, read_spend
from tollway.upstreams.pool import Pool
from tollway.upstreams.spend_book import SpendBook
from tollway.upstreams.target import Upstream


def instance() -> tuple[Pool, SpendBook]:
    pool = Pool([Upstream("m", "http://127.0.0.1:9/v1", manual_balance_usd=10.0)])
    return pool, SpendBook(pool)


async def save(engine: AsyncEngine, book: SpendBook) -> None:
    """What UpstreamManager.save_spend does without Redis."""
    unshared = book.unshared()
    totals = await add_spend(engine, {k: d for k, (_, d) in unshared.items()})
    for key, (acct, sent) in unshared.items():
        base, total = totals.get(key[0], (key[1], 0.0))
        if base == key[1]:
            book.absorb(acct, total, sent)


async def test_concurrent_saves_add_up(engine: AsyncEngine) -> None:
    fleet = [instance() for _ in range(3)]
    for n, (pool, _) in enumerate(fleet, start=1):
        for _ in range(n):
            pool.on_usage("m", 10, 0.25)  # 1, 2 and 3 requests of $0.25
    await asyncio.gather(*(save(engine, book) for _, book in fleet))
    await asyncio.gather(*(save(engine, book) for _, book in fleet))  # take the others' in
    left = [pool.by_name["m"].acct.available() for pool, _ in fleet]
    assert left == [pytest.approx(8.5)] * 3
    assert (await read_spend(engine))["upstream:m"] == (10.0, pytest.approx(1.5))
    # Totals counted in Redis are stored without ever going down.
    await raise_spend(engine, {("upstream:m", 10.0): 1.0})
    assert (await read_spend(engine))["upstream:m"][1] == pytest.approx(1.5)
    await raise_spend(engine, {("upstream:m", 10.0): 2.0})
    assert (await read_spend(engine))["upstream:m"][1] == pytest.approx(2.0)
