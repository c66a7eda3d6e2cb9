"""The key cache reads in batches: one query for the misses of one event-loop turn, and
expired keys answered from the cache while one background read refreshes them all."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tollway.core.secrets import hash_key
from tollway.core.types import KeyRecord
from tollway.gateway import auth
from tollway.gateway.auth import KeyCache

from .fixtures_gateway import Stack


class Db:
    """Key records by hash, as the batch loader reads them; every read is recorded."""

    def __init__(self, raws: list[str]) -> None:
        self.rows = {
            hash_key(r): KeyRecord(id=i, name="v1", prefix=r[:6]) for i, r in enumerate(raws)
        }
        self.reads: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # set: reads wait for it
        self.fail = False

    async def load(self, digests: list[str]) -> dict[str, KeyRecord]:
        self.reads.append(list(digests))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("database down")
        return {d: self.rows[d] for d in digests if d in self.rows}

    def rename(self, name: str) -> None:
        self.rows = {
            d: KeyRecord(id=r.id, name=name, prefix=r.prefix) for d, r in self.rows.items()
        }


RAWS = [f"tw-key-{i}" for i in range(30)]


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):  # 5 s at most
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_the_misses_of_one_turn_are_read_in_one_query() -> None:
    db = Db(RAWS)
    cache = KeyCache(db.load, ttl=60, negative_ttl=60)
    got = await asyncio.gather(
        *(cache.lookup(r) for r in [*RAWS, *RAWS, "tw-unknown-1", "tw-unknown-2"])
    )
    assert [g.name if g else None for g in got] == ["v1"] * 60 + [None, None]
    assert len(db.reads) == 1 and len(db.reads[0]) == 32  # each key once, in one query
    assert await cache.lookup("tw-unknown-1") is None and len(db.reads) == 1  # negative cache


async def test_more_misses_than_a_batch_take_several_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "BATCH", 8)
    db = Db(RAWS)
    cache = KeyCache(db.load)
    await asyncio.gather(*(cache.lookup(r) for r in RAWS))
    assert [len(r) for r in db.reads] == [8, 8, 8, 6]


async def test_an_expired_key_is_answered_at_once_and_refreshed_in_one_read() -> None:
    db = Db(RAWS)
    cache = KeyCache(db.load, ttl=0.05)
    await asyncio.gather(*(cache.lookup(r) for r in RAWS))
    await asyncio.sleep(0.1)  # every entry expired
    db.rename("v2")
    db.gate = asyncio.Event()  # the refresh will hang until released
    got = await asyncio.wait_for(asyncio.gather(*(cache.lookup(r) for r in RAWS)), 1.0)
    assert {g.name for g in got if g} == {"v1"} and len(got) == 30  # nobody waited
    await until(lambda: len(db.reads) == 2)
    assert sorted(db.reads[1]) == sorted(hash_key(r) for r in RAWS)  # one read for all 30
    db.gate.set()
    await until(lambda: cache.refreshed == 30)
    got = await asyncio.gather(*(cache.lookup(r) for r in RAWS))
    assert {g.name for g in got if g} == {"v2"} and len(db.reads) == 2


async def test_a_refresh_stores_neither_a_forgotten_key_nor_a_deleted_one() -> None:
    db = Db(RAWS[:3])
    changed, deleted, kept = RAWS[:3]
    cache = KeyCache(db.load, ttl=0.05)
    await asyncio.gather(*(cache.lookup(r) for r in (changed, deleted, kept)))
    await asyncio.sleep(0.1)
    db.gate = asyncio.Event()
    for raw in (changed, deleted, kept):  # stale answers; one refresh queued
        assert (await asyncio.wait_for(cache.lookup(raw), 1.0)) is not None
    await until(lambda: len(db.reads) == 2)
    cache.invalidate(hash_key(changed))  # an admin change arrives while the refresh reads
    del db.rows[hash_key(deleted)]
    db.gate.set()
    await until(lambda: cache.refreshed == 1)
    assert cache._entries.peek(hash_key(changed)) is None  # the refresh did not store it
    assert cache._entries.peek(hash_key(deleted)) is None  # gone from the database
    db.gate = None
    assert await cache.lookup(deleted) is None  # read again: unknown now
    assert (await cache.lookup(changed)) is not None and len(db.reads) == 4


async def test_a_failed_refresh_keeps_the_cached_answer_and_tries_again() -> None:
    db = Db(RAWS[:1])
    cache = KeyCache(db.load, ttl=0.05)
    await cache.lookup(RAWS[0])
    await asyncio.sleep(0.1)
    db.fail = True
    assert (await cache.lookup(RAWS[0])) is not None  # the database is down: still served
    await until(lambda: len(db.reads) == 2)
    await until(lambda: not cache._refreshing)
    db.fail = False
    db.rename("v2")
    assert (await cache.lookup(RAWS[0])).name == "v1"  # type: ignore[union-attr]
    await until(lambda: cache.refreshed == 1)
    assert (await cache.lookup(RAWS[0])).name == "v2"  # type: ignore[union-attr]


async def test_close_stops_a_waiting_refresh() -> None:
    db = Db(RAWS[:1])
    cache = KeyCache(db.load, ttl=0.01)
    await cache.lookup(RAWS[0])
    await asyncio.sleep(0.05)
    await cache.lookup(RAWS[0])
    assert cache._tasks  # the refresh waits to gather more keys
    await cache.close()
    assert not cache._tasks and not cache._refreshing


def test_a_key_disabled_straight_in_the_database_is_refused_after_the_ttl(tmp_path: Path) -> None:
    # Not through Tollway, so no key change is logged: only the TTL's refresh can see it.
    stack = Stack(tmp_path, key_cache_ttl=0.5)
    try:
        client = stack.client()

        def ask() -> None:
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )

        ask()
        db = sqlite3.connect(tmp_path / "tollway.db")
        with db:
            db.execute("UPDATE api_keys SET enabled = 0 WHERE key_hash = ?", (hash_key(stack.key),))
        db.close()
        # The cached answer holds until the TTL has passed; the first request after it is
        # still answered from the cache while the refresh reads the row, the next ones are
        # refused. (How many are answered first depends on timing: a loaded machine.)
        deadline = time.monotonic() + 10
        with pytest.raises(openai.PermissionDeniedError):
            while time.monotonic() < deadline:
                ask()
                time.sleep(0.05)
        # Which read saw the row (the background refresh, or a miss once the entry was too
        # old) depends on timing; the refresh itself is tested above.
    finally:
        stack.stop()
