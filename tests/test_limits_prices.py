"""Cost arithmetic, the price book (config file and database), the price service, and the
usage history that seeds budgets and quotas, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.types import UsageEvent
from tollway.gateway.limiting.seed import BatchedSeed
from tollway.gateway.pricing import Price, PriceBook, PriceConfigError, cost_usd, prices_from_config
from tollway.services import keys as key_service
from tollway.services import prices as price_service
from tollway.services.errors import Invalid, NotFound
from tollway.store.queries import read_revisions
from tollway.store.spend import key_spend, keys_spend
from tollway.store.usage_writer import write_usage


def event(model: str | None = "m", **usage: int | None) -> UsageEvent:
    return UsageEvent(0.0, "r", 1, "POST", "/v1/chat/completions", model=model, **usage)


def test_cost_arithmetic() -> None:
    p = Price(input=2.5, output=10.0, cached_input=1.25)
    # 1000 prompt tokens of which 400 cached, 500 completion tokens
    assert cost_usd(p, 1000, 500, 400) == pytest.approx((600 * 2.5 + 400 * 1.25 + 500 * 10) / 1e6)
    # without a cached price, cached tokens cost the input price
    assert cost_usd(Price(2.0, 4.0), 1000, 10, 400) == pytest.approx((1000 * 2 + 10 * 4) / 1e6)
    assert cost_usd(p, None, 7, None) == pytest.approx(70 / 1e6)  # embeddings-like, streams cut
    assert cost_usd(p, 10, 0, 50) == pytest.approx(10 * 1.25 / 1e6)  # cached never above prompt


def test_price_book_unknown_is_none_not_zero() -> None:
    book = PriceBook({"gpt-x": Price(1.0, 2.0)})
    assert book(event("gpt-x", prompt_tokens=1_000_000, completion_tokens=0)) == 1.0
    assert book(event("nope", prompt_tokens=10, completion_tokens=10)) is None
    assert book(event(None, prompt_tokens=10)) is None
    # an alias is priced by the upstream model it maps to
    aliased = event("alias", prompt_tokens=0, completion_tokens=1_000_000)
    aliased.upstream_model = "gpt-x"
    assert book(aliased) == 2.0
    book.replace({})
    assert book(aliased) is None and len(book) == 0


def test_prices_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "upstreams: []\nprices:\n  gpt-4o: {input: 2.5, output: 10, cached_input: 1.25}\n"
        "  mini: {input: 0.15, output: 0.6}\n"
    )
    assert prices_from_config(cfg) == {
        "gpt-4o": Price(2.5, 10.0, 1.25),
        "mini": Price(0.15, 0.6, None),
    }
    assert prices_from_config(None) == {}
    cfg.write_text("upstreams: []\n")
    assert prices_from_config(cfg) == {}
    cfg.write_text("prices:\n  bad: {input: -1, output: 1}\n")
    with pytest.raises(PriceConfigError, match=r"prices\.bad"):
        prices_from_config(cfg)
    cfg.write_text("prices:\n  typo: {input: 1, outptu: 1}\n")
    with pytest.raises(PriceConfigError):
        prices_from_config(cfg)


async def test_price_service(engine: AsyncEngine) -> None:
    before = (await read_revisions(engine))["prices"]
    info = await price_service.set_price(
        engine, {"model": " gpt-4o ", "input_per_mtok": 2.5, "output_per_mtok": 10}
    )
    assert info.model == "gpt-4o" and info.cached_input_per_mtok is None
    await price_service.set_price(
        engine,
        {"model": "gpt-4o", "input_per_mtok": 3, "output_per_mtok": 12, "cached_input_per_mtok": 1},
    )
    assert (await price_service.get_price(engine, "gpt-4o")).input_per_mtok == 3
    assert [p.model for p in await price_service.list_prices(engine)] == ["gpt-4o"]
    assert (await read_revisions(engine))["prices"] == before + 2
    with pytest.raises(Invalid, match="input_per_mtok"):
        await price_service.set_price(
            engine, {"model": "x", "input_per_mtok": -1, "output_per_mtok": 1}
        )
    await price_service.delete_price(engine, "gpt-4o")
    with pytest.raises(NotFound):
        await price_service.delete_price(engine, "gpt-4o")
    with pytest.raises(NotFound):
        await price_service.get_price(engine, "gpt-4o")
    assert (await read_revisions(engine))["prices"] == before + 3


async def test_key_spend_reads_the_rollups(engine: AsyncEngine) -> None:
    key_id = (await key_service.create_key(engine, {"name": "k"})).info.id
    other = (await key_service.create_key(engine, {"name": "o"})).info.id
    day = 1_800_000_000.0 - 8 * 3600  # 2027-01-15 00:00 UTC
    events = []
    for ts, kid, tokens, cost in [
        (day - 3600, key_id, 100, 1.0),  # yesterday
        (day + 10, key_id, 20, 0.25),
        (day + 7200, key_id, 30, None),  # unknown cost
        (day + 7300, other, 1000, 9.0),
    ]:
        ev = event(total_tokens=tokens)
        ev.ts, ev.key_id, ev.cost_usd, ev.status = ts, kid, cost, 200
        events.append(ev)
    await write_usage(engine, events)
    assert await key_spend(engine, key_id, day) == (150, 0.25)
    assert await key_spend(engine, key_id, 0.0) == (150, 1.25)
    assert await key_spend(engine, 99_999, 0.0) == (0, 0.0)
    many = await keys_spend(engine, [key_id, other, 99_999], day)
    assert many == {key_id: (150, 0.25), other: (1000, 9.0), 99_999: (0, 0)}

    # The limits' first reads of keys asked together: one query per period start.
    reads: list[tuple[list[int], float]] = []

    async def read(ids: list[int], since: float) -> dict[int, tuple[int, float]]:
        reads.append((ids, since))
        return await keys_spend(engine, ids, since)

    seed = BatchedSeed(read)
    got = await asyncio.gather(
        seed(key_id, day), seed(other, day), seed(key_id, day), seed(key_id, 0.0)
    )
    assert got == [(150, 0.25), (1000, 9.0), (150, 0.25), (150, 1.25)]
    assert sorted(reads) == [([key_id], 0.0), ([key_id, other], day)]


async def test_a_failed_batched_seed_read_reaches_every_asker() -> None:
    async def down(ids: list[int], since: float) -> dict[int, tuple[int, float]]:
        raise ConnectionError("database down")

    seed = BatchedSeed(down)
    got = await asyncio.gather(seed(1, 0.0), seed(2, 0.0), return_exceptions=True)
    assert all(isinstance(g, ConnectionError) for g in got)
