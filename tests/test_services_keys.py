"""Key administration and key stats on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.secrets import hash_key
from tollway.core.types import UsageEvent
from tollway.services import keys, usage
from tollway.services.errors import Invalid, NotFound
from tollway.store.queries import load_key_by_hash, read_revisions
from tollway.store.tables import api_keys, usage_records
from tollway.store.usage_writer import write_usage


async def test_create_returns_secret_once_and_stores_hash(engine: AsyncEngine) -> None:
    created = await keys.create_key(engine, keys.KeyCreate(name="  My App  ", email="me@x.io"))
    assert created.key.startswith("tw-")
    assert created.key not in repr(created)
    info = created.info
    assert (info.name, info.email, info.prefix, info.status) == (
        "My App",
        "me@x.io",
        created.key[:10],
        "active",
    )
    assert info.created_at.tzinfo is not None and info.created_at == info.updated_at
    assert "key_hash" not in info.model_dump() and created.key not in info.model_dump_json()
    async with engine.connect() as conn:
        stored = (await conn.execute(select(api_keys.c.key_hash))).scalar()
    assert stored == hash_key(created.key)
    assert (await read_revisions(engine))["keys"] == 1


async def test_get_and_not_found(engine: AsyncEngine) -> None:
    created = await keys.create_key(engine, {"name": "a"})
    assert await keys.get_key(engine, created.info.id) == created.info
    with pytest.raises(NotFound):
        await keys.get_key(engine, 9999)
    for op in (keys.enable_key, keys.disable_key, keys.rotate_key, keys.delete_key):
        with pytest.raises(NotFound):
            await op(engine, 9999)
    with pytest.raises(NotFound):
        await keys.update_key(engine, 9999, {"name": "x"})
    assert (await read_revisions(engine))["keys"] == 1  # failed mutations bumped nothing


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "a", "rpm": -1},
        {"name": "a", "budget_usd": -0.01},
        {"name": "a", "budget_usd": float("inf")},
        {"name": "a", "budget_period": "yearly"},
        {"name": "a", "email": "not-an-email"},
        {"name": "a", "unknown": 1},
    ],
)
async def test_create_rejects_bad_input(engine: AsyncEngine, data: dict[str, object]) -> None:
    with pytest.raises(Invalid):
        await keys.create_key(engine, data)


async def test_list_search_filter_paginate(engine: AsyncEngine) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    future = datetime.now(UTC) + timedelta(days=1)
    alpha = (await keys.create_key(engine, {"name": "Alpha", "email": "ops@acme.com"})).info
    beta = (await keys.create_key(engine, {"name": "beta_100%", "expires_at": future})).info
    old = (await keys.create_key(engine, {"name": "old", "expires_at": past})).info
    off = await keys.create_key(engine, {"name": "off", "enabled": False, "expires_at": past})
    off_info = off.info

    page = await keys.list_keys(engine)
    assert page.total == 4 and [k.id for k in page.items] == [
        off_info.id,
        old.id,
        beta.id,
        alpha.id,
    ]
    assert {k.id: k.status for k in page.items} == {
        alpha.id: "active",
        beta.id: "active",
        old.id: "expired",
        off_info.id: "disabled",
    }

    async def ids(**kw: object) -> list[int]:
        return [k.id for k in (await keys.list_keys(engine, **kw)).items]  # type: ignore[arg-type]

    assert await ids(status="active") == [beta.id, alpha.id]
    assert await ids(status="expired") == [old.id]
    assert await ids(status="disabled") == [off_info.id]
    assert await ids(search="ALPH") == [alpha.id]
    assert await ids(search="acme") == [alpha.id]  # email
    assert await ids(search="100%") == [beta.id]  # LIKE wildcards are literal
    assert await ids(search="a_1") == [beta.id]
    assert await ids(search="beta_") == [beta.id]
    assert await ids(search=off_info.prefix) == [off_info.id]
    assert await ids(search=off.key) == [off_info.id]  # a pasted full secret
    assert await ids(search="   ") == await ids()
    assert await ids(search="@", status="active") == [alpha.id]  # only alpha has an email

    p2 = await keys.list_keys(engine, offset=1, limit=2)
    assert p2.total == 4 and [k.id for k in p2.items] == [old.id, beta.id]
    assert (p2.offset, p2.limit) == (1, 2)

    for bad in ({"status": "gone"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}):
        with pytest.raises(Invalid):
            await keys.list_keys(engine, **bad)  # type: ignore[arg-type]


async def test_update_fields(engine: AsyncEngine) -> None:
    info = (await keys.create_key(engine, {"name": "a", "rpm": 5, "email": "a@b.c"})).info
    expires = datetime(2031, 5, 6, 7, 8, 9)  # naive = UTC
    updated = await keys.update_key(
        engine,
        info.id,
        {
            "name": "renamed",
            "email": None,
            "expires_at": expires,
            "models": ["m2", " m1 ", "m2", ""],
            "rpd": 100,
            "tpm": 1000,
            "tpd": 10_000,
            "token_quota": 1_000_000,
            "budget_usd": 12.5,
            "budget_period": "weekly",
            "max_parallel": 4,
        },
    )
    assert updated.name == "renamed" and updated.email is None
    assert updated.expires_at == expires.replace(tzinfo=UTC)
    assert updated.models == ["m1", "m2"]
    assert updated.rpm == 5  # untouched
    assert (updated.rpd, updated.tpm, updated.tpd, updated.token_quota) == (100, 1000, 10_000, 1e6)
    assert (updated.budget_usd, updated.budget_period, updated.max_parallel) == (12.5, "weekly", 4)
    assert updated.updated_at >= info.updated_at
    assert await keys.get_key(engine, info.id) == updated

    cleared = await keys.update_key(engine, info.id, keys.KeyUpdate(rpm=None, models=None))
    assert cleared.rpm is None and cleared.models is None and cleared.rpd == 100

    for bad in ({"name": None}, {"enabled": None}, {"budget_period": None}, {"tpm": -5}):
        with pytest.raises(Invalid):
            await keys.update_key(engine, info.id, bad)
    assert (await read_revisions(engine))["keys"] == 3


async def test_enable_disable_rotate_delete(engine: AsyncEngine) -> None:
    created = await keys.create_key(engine, {"name": "a", "rpm": 7})
    kid = created.info.id
    assert (await keys.disable_key(engine, kid)).status == "disabled"
    rec = await load_key_by_hash(engine, hash_key(created.key))
    assert rec is not None and rec.enabled is False
    assert (await keys.enable_key(engine, kid)).status == "active"

    await write_usage(engine, [UsageEvent(ts=1e9, request_id="r", key_id=kid, method="POST",
                                          endpoint="/v1/embeddings", status=200)])  # fmt: skip
    rotated = await keys.rotate_key(engine, kid)
    assert rotated.key != created.key and rotated.info.id == kid
    assert rotated.info.prefix == rotated.key[:10] and rotated.info.rpm == 7
    assert await load_key_by_hash(engine, hash_key(created.key)) is None
    rec = await load_key_by_hash(engine, hash_key(rotated.key))
    assert rec is not None and rec.id == kid
    assert (await usage.key_stats(engine, kid)).totals.requests == 1  # history kept

    await keys.delete_key(engine, kid)
    with pytest.raises(NotFound):
        await keys.get_key(engine, kid)
    assert await load_key_by_hash(engine, hash_key(rotated.key)) is None
    async with engine.connect() as conn:
        kept = (await conn.execute(select(usage_records.c.key_id))).scalars().all()
    assert kept == [None]  # raw usage survives the key, unlinked
    assert (await read_revisions(engine))["keys"] == 5


async def test_key_status() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert keys.key_status(True, None, now) == "active"
    assert keys.key_status(True, now, now) == "expired"
    assert keys.key_status(False, now + timedelta(days=1), now) == "disabled"


async def test_key_stats_exact(engine: AsyncEngine) -> None:
    kid = (await keys.create_key(engine, {"name": "stats"})).info.id
    other = (await keys.create_key(engine, {"name": "other"})).info.id
    empty = await usage.key_stats(engine, kid)
    assert empty.totals == usage.UsageTotals() and empty.recent == [] and empty.by_model == []

    t0 = datetime(2026, 4, 1, 8, 30, tzinfo=UTC).timestamp()

    def ev(i: int, endpoint: str, model: str | None, status: int = 200, **kw: object) -> UsageEvent:
        return UsageEvent(
            ts=t0 + i * 60,
            request_id=f"r{i}",
            key_id=kw.pop("key_id", kid),  # type: ignore[arg-type]
            method="POST",
            endpoint=endpoint,
            model=model,
            upstream="u",
            status=status,
            prompt_tokens=kw.get("p", 100),  # type: ignore[arg-type]
            completion_tokens=kw.get("c", 20),  # type: ignore[arg-type]
            total_tokens=kw.get("t", 120),  # type: ignore[arg-type]
            cost_usd=kw.get("cost", 0.5),  # type: ignore[arg-type]
            latency_ms=50.0,
        )

    await write_usage(
        engine,
        [
            ev(0, "/v1/chat/completions", "gpt-a"),
            ev(1, "/v1/chat/completions", "gpt-a"),
            ev(2, "/v1/chat/completions", "gpt-b", status=502, p=None, c=None, t=None, cost=None),
            ev(3, "/v1/embeddings", "emb", p=8, c=0, t=8, cost=0.001),
            ev(4, "/v1/chat/completions", "gpt-a", key_id=other),
        ],
    )
    await write_usage(engine, [ev(90, "/v1/models", None, p=None, c=None, t=None, cost=None)])

    s = await usage.key_stats(engine, kid, recent=3)
    assert (s.key_id, s.name) == (kid, "stats")
    assert s.totals.model_dump() == {
        "requests": 5,
        "errors": 1,
        "client_errors": 0,  # the one error is a 502: upstream-side
        "prompt_tokens": 208,
        "completion_tokens": 40,
        "total_tokens": 248,
        "cost_usd": pytest.approx(1.001),
    }
    assert [(g.name, g.requests, g.total_tokens) for g in s.by_endpoint] == [
        ("/v1/chat/completions", 3, 240),
        ("/v1/embeddings", 1, 8),
        ("/v1/models", 1, 0),
    ]
    assert [(g.name, g.requests, g.errors) for g in s.by_model] == [
        ("gpt-a", 2, 0),
        ("", 1, 0),
        ("emb", 1, 0),
        ("gpt-b", 1, 1),
    ]
    assert [r.request_id for r in s.recent] == ["r90", "r3", "r2"]
    assert s.recent[0].ts == datetime.fromtimestamp(t0 + 90 * 60, UTC)
    assert s.recent[0].model is None and s.recent[2].status == 502
    with pytest.raises(NotFound):
        await usage.key_stats(engine, 12345)
