"""A key change makes every instance forget that key only (by its hash): the others stay
cached, and a lookup that was already reading the database when its key changed does not
store the stale record."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from tollway.core.secrets import hash_key
from tollway.core.types import KeyRecord
from tollway.gateway.auth import KeyCache, one_by_one
from tollway.services import keys as key_service
from tollway.store import key_changes
from tollway.store.db import create_engine

from .fixtures_gateway import Stack, run_async
from .servers import GatewayThread


def _record(name: str) -> KeyRecord:
    return KeyRecord(id=1, name=name, prefix="tw-test")


async def test_a_load_in_flight_when_its_key_is_invalidated_does_not_store() -> None:
    version = ["old"]
    gate = asyncio.Event()
    loads: list[str] = []

    async def slow_loader(digest: str) -> KeyRecord | None:
        loads.append(version[0])
        seen = version[0]  # what the database said when the read began
        await gate.wait()
        return _record(seen)

    cache = KeyCache(one_by_one(slow_loader), ttl=60, negative_ttl=5)
    first = asyncio.create_task(cache.lookup("tw-key"))
    await asyncio.sleep(0.01)  # the read has started
    version[0] = "new"  # the admin change commits...
    cache.invalidate(hash_key("tw-key"))  # ...and reaches this instance mid-read
    gate.set()
    assert (await first) == _record("old")  # it began before the change: answered as read
    record = await cache.lookup("tw-key")
    assert record == _record("new") and loads == ["old", "new"]  # not the stale store
    assert await cache.lookup("tw-key") == _record("new") and len(loads) == 2  # now cached


async def test_invalidate_forgets_only_that_key() -> None:
    reads: Counter[str] = Counter()

    async def loader(digest: str) -> KeyRecord | None:
        reads[digest] += 1
        return _record(digest[:6])

    cache = KeyCache(one_by_one(loader))
    for raw in ("tw-a", "tw-b", "tw-a", "tw-b"):
        await cache.lookup(raw)
    cache.invalidate(hash_key("tw-a"))
    cache.invalidate(hash_key("tw-never-seen"))  # harmless
    for raw in ("tw-a", "tw-b"):
        await cache.lookup(raw)
    assert reads == {hash_key("tw-a"): 2, hash_key("tw-b"): 1}


def _create(db_url: str, name: str) -> key_service.CreatedKey:
    async def create() -> key_service.CreatedKey:
        engine = create_engine(db_url)
        try:
            return await key_service.create_key(engine, {"name": name})
        finally:
            await engine.dispose()

    created: key_service.CreatedKey = run_async(create())
    return created


def _disable(db_url: str, key_id: int) -> None:
    async def disable() -> None:
        engine = create_engine(db_url)
        try:
            await key_service.disable_key(engine, key_id)
        finally:
            await engine.dispose()

    run_async(disable())


def _count_reads(gateway: GatewayThread) -> Counter[str]:
    rt = gateway.app.runtime
    assert rt is not None
    reads: Counter[str] = Counter()
    load = rt.keys._load

    async def counting(digests: list[str]) -> Any:
        reads.update(digests)
        return await load(digests)

    rt.keys._load = counting
    return reads


def _followed(gateways: list[GatewayThread], db_url: str) -> None:
    """Wait until every instance has read the key changes log up to its newest row."""

    async def newest() -> int:
        engine = create_engine(db_url)
        try:
            return await key_changes.last_id(engine)
        finally:
            await engine.dispose()

    target: int = run_async(newest())
    deadline = time.monotonic() + 10
    for gateway in gateways:
        rt = gateway.app.runtime
        assert rt is not None and rt.key_changes is not None
        while rt.key_changes._last < target:
            assert time.monotonic() < deadline, "key changes were not followed"
            time.sleep(0.02)


def _ask(url: str, key: str) -> None:
    client = openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0)
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.postgres
def test_a_change_reaches_both_instances_and_rereads_only_that_key(
    pg_url_sync: str, tmp_path: Path
) -> None:
    stack = Stack(tmp_path, database_url=pg_url_sync)  # polls every 0.2 s
    other = GatewayThread(stack.settings).start()
    try:
        a, b = _create(pg_url_sync, "a"), _create(pg_url_sync, "b")
        gateways = [stack.gateway, other]
        _followed(gateways, pg_url_sync)  # the creations (each clears its own unseen hash)
        reads = [_count_reads(stack.gateway), _count_reads(other)]
        for url in (stack.url, other.url):
            for key in (a.key, b.key, a.key, b.key):
                _ask(url, key)
        ha, hb = hash_key(a.key), hash_key(b.key)
        assert reads == [Counter({ha: 1, hb: 1})] * 2

        started = time.monotonic()
        _disable(pg_url_sync, a.info.id)  # from outside both instances, as the CLI would
        took = []
        for url in (stack.url, other.url):
            deadline = time.monotonic() + 10
            while True:
                try:
                    _ask(url, a.key)
                except openai.PermissionDeniedError:
                    took.append(time.monotonic() - started)
                    break
                assert time.monotonic() < deadline, "the change never reached " + url
                time.sleep(0.02)
        print(f"disabled key refused after {took[0]:.2f} s / {took[1]:.2f} s")

        _create(pg_url_sync, "c")  # a new key invalidates only its own (unseen) hash
        _followed(gateways, pg_url_sync)
        for url in (stack.url, other.url):
            _ask(url, b.key)
        # A re-read once per instance; B never: still cached after both changes.
        assert reads == [Counter({ha: 2, hb: 1})] * 2
    finally:
        other.stop()
        stack.stop()


async def test_each_mutation_logs_exactly_its_key_hashes(tmp_path: Path) -> None:
    from sqlalchemy import select

    from tollway.store.db import migrate
    from tollway.store.tables import key_changes

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
    try:
        await migrate(engine)

        async def logged() -> list[str]:
            async with engine.connect() as conn:
                rows = await conn.execute(select(key_changes.c.key_hash).order_by("id"))
                return [str(h) for h in rows.scalars()]

        created = await key_service.create_key(engine, {"name": "x"})
        first = hash_key(created.key)
        assert await logged() == [first]  # a new key: only its own (negative) entry
        await key_service.update_key(engine, created.info.id, {"rpm": 5})
        await key_service.disable_key(engine, created.info.id)
        rotated = await key_service.rotate_key(engine, created.info.id)
        second = hash_key(rotated.key)
        await key_service.delete_key(engine, created.info.id)
        assert await logged() == [first, first, first, first, second, second]
        with pytest.raises(key_service.NotFound):
            await key_service.disable_key(engine, created.info.id)
        assert len(await logged()) == 6  # a failed change logs nothing
    finally:
        await engine.dispose()
