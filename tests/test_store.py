"""Store layer on real SQLite and PostgreSQL: migrations, key loader, revisions, usage writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.secrets import hash_key
from tollway.core.types import KeyLimits, UsageEvent
from tollway.services import keys
from tollway.store.db import create_engine, migrate
from tollway.store.queries import (
    as_utc,
    bump_revision,
    kv_delete,
    kv_get,
    kv_set,
    load_key_by_hash,
    load_keys_by_hash,
    read_revisions,
)
from tollway.store.tables import api_keys, usage_records, usage_rollups
from tollway.store.usage_writer import write_usage

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC).timestamp()


async def test_migrations_apply_and_are_idempotent(db_url: str) -> None:
    eng = create_engine(db_url)
    try:
        await migrate(eng)
        await migrate(eng)  # second run is a no-op
        async with eng.connect() as conn:
            names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            version = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
    finally:
        await eng.dispose()
    assert {"api_keys", "usage_records", "usage_rollups", "state_revisions", "kv"} <= names
    assert len(version) == 1


async def test_load_key_by_hash(engine: AsyncEngine) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    created = await keys.create_key(
        engine,
        {
            "name": "app",
            "email": "a@example.com",
            "expires_at": expires,
            "models": ["gpt-b", "gpt-a"],
            "rpm": 10,
            "tpd": 1000,
            "token_quota": 5_000_000_000,
            "budget_usd": 2.5,
            "budget_period": "monthly",
            "max_parallel": 3,
        },
    )
    rec = await load_key_by_hash(engine, hash_key(created.key))
    assert rec is not None
    assert rec.id == created.info.id
    assert (rec.name, rec.prefix, rec.email, rec.enabled) == (
        "app",
        created.key[:10],
        "a@example.com",
        True,
    )
    assert rec.expires_at == expires.timestamp()
    assert rec.models == frozenset({"gpt-a", "gpt-b"})
    assert rec.limits == KeyLimits(
        rpm=10,
        tpd=1000,
        token_quota=5_000_000_000,
        budget_usd=2.5,
        budget_period="monthly",
        max_parallel=3,
    )
    assert await load_key_by_hash(engine, hash_key("tw-unknown")) is None

    plain = await keys.create_key(engine, {"name": "plain"})
    rec2 = await load_key_by_hash(engine, hash_key(plain.key))
    assert rec2 is not None
    assert rec2.models is None and rec2.expires_at is None and not rec2.limits.any()


async def test_load_keys_by_hash_reads_many_and_shares_equal_limits(engine: AsyncEngine) -> None:
    tier = {"rpm": 60, "budget_usd": 5.0, "budget_period": "daily"}
    made = [await keys.create_key(engine, {"name": f"k{i}", **tier}) for i in range(3)]
    other = await keys.create_key(engine, {"name": "other", "rpm": 61})
    hashes = [hash_key(m.key) for m in [*made, other]]
    found = await load_keys_by_hash(engine, [*hashes, hash_key("tw-unknown")])
    assert sorted(found) == sorted(hashes)  # the unknown key is absent
    assert [found[h].name for h in hashes] == ["k0", "k1", "k2", "other"]
    first = found[hashes[0]].limits
    assert first == KeyLimits(rpm=60, budget_usd=5.0, budget_period="daily")
    # One object for the three keys of one tier, another for the odd one.
    assert all(found[h].limits is first for h in hashes[:3])
    assert found[hashes[3]].limits is not first and found[hashes[3]].limits.rpm == 61


async def test_revisions(engine: AsyncEngine) -> None:
    assert await read_revisions(engine) == {"keys": 0, "upstreams": 0, "prices": 0}
    async with engine.begin() as conn:
        await bump_revision(conn, "keys")
        await bump_revision(conn, "keys")
        await bump_revision(conn, "prices")
    # A rolled-back transaction leaves the counter alone.
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await bump_revision(conn, "keys")
            raise RuntimeError("boom")
    assert await read_revisions(engine) == {"keys": 2, "upstreams": 0, "prices": 1}


async def test_kv(engine: AsyncEngine) -> None:
    assert await kv_get(engine, "admin_hash") is None
    await kv_set(engine, "admin_hash", "one")
    await kv_set(engine, "admin_hash", "two")
    assert await kv_get(engine, "admin_hash") == "two"
    await kv_delete(engine, "admin_hash")
    assert await kv_get(engine, "admin_hash") is None


def test_as_utc() -> None:
    assert as_utc(None) is None
    naive = datetime(2026, 1, 1, 12)
    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    plus2 = datetime(2026, 1, 1, 16, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(plus2) == datetime(2026, 1, 1, 14, tzinfo=UTC)
    assert as_utc(plus2).tzinfo is UTC


def _event(i: int, key_id: int | None, **kw: object) -> UsageEvent:
    base: dict[str, object] = {
        "ts": T0 + i,
        "request_id": f"req-{key_id}-{i}",
        "key_id": key_id,
        "method": "POST",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-a",
        "upstream": "up1",
        "upstream_model": "gpt-a-2026",
        "status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.25,
        "latency_ms": 100.0,
        "attempts": 1,
    }
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


async def _rollups(engine: AsyncEngine) -> dict[tuple[object, ...], tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(usage_rollups))).all()
    return {
        (as_utc(r.hour), r.key_id, r.model, r.upstream, r.endpoint): (
            r.requests,
            r.errors,
            r.prompt_tokens,
            r.completion_tokens,
            r.total_tokens,
            r.cost_usd,
            r.latency_ms_sum,
        )
        for r in rows
    }


async def test_write_usage_rows_rollups_and_last_used(engine: AsyncEngine) -> None:
    k1 = (await keys.create_key(engine, {"name": "one"})).info.id
    k2 = (await keys.create_key(engine, {"name": "two"})).info.id
    hour = datetime(2026, 3, 1, 10, tzinfo=UTC)

    await write_usage(engine, [])  # nothing to do
    batch1 = [
        _event(0, k1),
        _event(
            1,
            k1,
            status=429,
            prompt_tokens=None,
            completion_tokens=None,
            total_tokens=None,
            cost_usd=None,
            latency_ms=None,
            error_type="rate_limit",
        ),
        _event(2, k2, model="gpt-b"),
        _event(3, None, model=None, upstream=None, endpoint="/v1/models", method="GET"),
    ]
    await write_usage(engine, batch1)
    batch2 = [_event(10, k1), _event(3600, k1, stream=True)]  # the second one: next hour
    await write_usage(engine, batch2)

    async with engine.connect() as conn:
        raw = (await conn.execute(select(usage_records).order_by(usage_records.c.id))).all()
        last = dict((await conn.execute(select(api_keys.c.id, api_keys.c.last_used_at))).all())
    assert len(raw) == 6
    first = raw[0]
    assert as_utc(first.ts) == datetime.fromtimestamp(T0, UTC)
    assert (first.request_id, first.key_id, first.upstream_model, first.attempts) == (
        f"req-{k1}-0",
        k1,
        "gpt-a-2026",
        1,
    )
    assert raw[1].error_type == "rate_limit" and raw[1].total_tokens is None
    assert raw[3].key_id is None
    assert raw[5].stream is True

    rollups = await _rollups(engine)
    assert rollups == {
        (hour, k1, "gpt-a", "up1", "/v1/chat/completions"): (3, 1, 20, 10, 30, 0.5, 200.0),
        (hour, k2, "gpt-b", "up1", "/v1/chat/completions"): (1, 0, 10, 5, 15, 0.25, 100.0),
        (hour, 0, "", "", "/v1/models"): (1, 0, 10, 5, 15, 0.25, 100.0),
        (hour + timedelta(hours=1), k1, "gpt-a", "up1", "/v1/chat/completions"): (
            1,
            0,
            10,
            5,
            15,
            0.25,
            100.0,
        ),
    }
    assert as_utc(last[k1]) == datetime.fromtimestamp(T0 + 3600, UTC)
    assert as_utc(last[k2]) == datetime.fromtimestamp(T0 + 2, UTC)

    # A late, older batch does not move last_used_at backwards.
    await write_usage(engine, [_event(5, k1)])
    async with engine.connect() as conn:
        lu = (
            await conn.execute(select(api_keys.c.last_used_at).where(api_keys.c.id == k1))
        ).scalar()
    assert as_utc(lu) == datetime.fromtimestamp(T0 + 3600, UTC)


async def test_write_usage_for_deleted_key_keeps_usage(engine: AsyncEngine) -> None:
    k = (await keys.create_key(engine, {"name": "gone"})).info.id
    await keys.delete_key(engine, k)
    await write_usage(engine, [_event(0, k)])
    async with engine.connect() as conn:
        raw = (await conn.execute(select(usage_records.c.key_id))).scalars().all()
    assert raw == [None]
    assert list(await _rollups(engine)) == [
        (datetime(2026, 3, 1, 10, tzinfo=UTC), 0, "gpt-a", "up1", "/v1/chat/completions")
    ]


async def test_write_usage_large_batch(engine: AsyncEngine) -> None:
    ids = [(await keys.create_key(engine, {"name": f"k{i}"})).info.id for i in range(5)]
    events = [
        _event(
            i, ids[i % 5], model=f"m{i % 3}", request_id=f"r{i}", status=500 if i % 10 == 0 else 200
        )
        for i in range(5000)
    ]
    await write_usage(engine, events)
    rollups = await _rollups(engine)
    assert sum(int(v[0]) for v in rollups.values()) == 5000  # type: ignore[call-overload]
    assert sum(int(v[1]) for v in rollups.values()) == 500  # type: ignore[call-overload]
    assert sum(int(v[4]) for v in rollups.values()) == 5000 * 15  # type: ignore[call-overload]
    async with engine.connect() as conn:
        n = (await conn.exec_driver_sql("SELECT count(*) FROM usage_records")).scalar()
    assert n == 5000
