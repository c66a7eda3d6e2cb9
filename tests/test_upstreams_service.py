"""Database upstreams through the service layer: CRUD, encryption at rest, masking, the
running gateway picking changes up, the one-call test, balance refresh, manual spend kept."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.settings import Settings
from tollway.services import upstreams as svc
from tollway.services.errors import Invalid, NotFound
from tollway.store import queries
from tollway.store.db import create_engine
from tollway.store.tables import upstreams as table
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box
from tollway.upstreams.dbsource import load_db_upstreams

from .fake_upstream import FakeUpstream
from .fixtures_gateway import run_async
from .pool_rig import Rig, chats

BOX = SecretBox(b"test-secret-key-for-upstreams")
KEY = "sk-live-VERYSECRET-0123456789abcdef"


async def test_crud_masks_and_encrypts(engine: AsyncEngine) -> None:
    before = (await queries.read_revisions(engine))["upstreams"]
    info = await svc.create_upstream(
        engine,
        {
            "name": "vercel-1",
            "base_url": "https://ai-gateway.vercel.sh/v1/",
            "api_key": KEY,
            "models": ["b", "a", "a"],
            "account": "team@x",
            "provider": "vercel",
            "rpm": 60,
        },
        box=BOX,
    )
    assert info.base_url == "https://ai-gateway.vercel.sh/v1" and info.models == ["a", "b"]
    assert (
        info.key_hint is not None and KEY not in info.key_hint and info.key_hint.startswith("sk-l")
    )
    assert KEY not in repr(info) and KEY not in info.model_dump_json()
    assert (await queries.read_revisions(engine))["upstreams"] == before + 1
    async with engine.connect() as conn:
        stored = (await conn.execute(select(table.c.api_key_enc))).scalar()
    assert stored and KEY not in stored and BOX.decrypt(stored) == KEY

    listed = await svc.list_upstreams(engine)
    assert [u.name for u in listed] == ["vercel-1"]
    assert (await svc.get_upstream(engine, info.id)).rpm == 60

    with pytest.raises(Invalid):
        await svc.create_upstream(engine, {"name": "vercel-1", "base_url": "http://x"}, box=BOX)
    with pytest.raises(Invalid):
        await svc.create_upstream(engine, {"name": "bad", "base_url": "ftp://x"}, box=BOX)
    with pytest.raises(Invalid):
        await svc.create_upstream(engine, {"name": "bad", "base_url": "http://x", "weight": -1})

    updated = await svc.update_upstream(
        engine, info.id, {"weight": 2.5, "api_key": "sk-other-key-999999"}, box=BOX
    )
    assert updated.weight == 2.5 and updated.key_hint == "sk-o…99"
    assert (await svc.update_upstream(engine, info.id, {"api_key": ""})).key_hint is None
    with pytest.raises(Invalid):
        await svc.update_upstream(engine, info.id, {"name": None})
    with pytest.raises(NotFound):
        await svc.update_upstream(engine, 999, {"weight": 1})

    ups = await load_db_upstreams(engine, BOX)
    assert [(u.name, u.source, u.api_key, u.account) for u in ups] == [
        ("vercel-1", "database", "", "team@x")
    ]
    await svc.update_upstream(engine, info.id, {"enabled": False})
    assert await load_db_upstreams(engine, BOX) == []
    await svc.delete_upstream(engine, info.id)
    with pytest.raises(NotFound):
        await svc.get_upstream(engine, info.id)
    assert (await queries.read_revisions(engine))["upstreams"] == before + 5  # failures: none


def test_secret_key_comes_from_settings(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"  # no secret file beside it
    admin = SecretStr("admin-pw")
    with pytest.raises(SecretKeyMissing):
        secret_box(Settings(database_url=url, secret_key=None, admin_secret=None))
    with pytest.raises(SecretKeyMissing):  # the admin secret never encrypts new rows
        secret_box(Settings(database_url=url, admin_secret=admin))
    legacy = SecretBox(b"admin-pw").encrypt(KEY)  # what older versions stored
    reader = secret_box(Settings(database_url=url, admin_secret=admin), reading=True)
    assert reader.decrypt(legacy) == KEY
    own = secret_box(Settings(database_url=url, secret_key=SecretStr("k1"), admin_secret=admin))
    assert own.decrypt(legacy) == KEY  # older rows are still read
    token = own.encrypt(KEY)
    with pytest.raises(ValueError):
        SecretBox(b"admin-pw").decrypt(token)  # new rows: the server secret only


async def test_secret_absent_from_the_sqlite_file(tmp_path: Path) -> None:
    from tollway.store.db import migrate

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'secret.db'}")
    try:
        await migrate(engine)
        await svc.create_upstream(
            engine, {"name": "u", "base_url": "http://127.0.0.1:1/v1", "api_key": KEY}, box=BOX
        )
    finally:
        await engine.dispose()
    raw = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.glob("secret.db*"))
    )
    assert b"http://127.0.0.1:1/v1" in raw  # the file does hold the row...
    assert KEY.encode() not in raw  # ...but never the key
    assert KEY[8:24].encode() not in raw


async def test_key_encrypted_with_another_secret_is_skipped(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await svc.create_upstream(
        engine, {"name": "u", "base_url": "http://x/v1", "api_key": KEY}, box=BOX
    )
    caplog.set_level(logging.ERROR, logger="tollway.upstreams")
    assert await load_db_upstreams(engine, SecretBox(b"another")) == []
    assert await load_db_upstreams(engine, None) == []
    assert any("another secret key" in r.getMessage() for r in caplog.records)
    assert all(KEY not in r.getMessage() for r in caplog.records)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    f = FakeUpstream("dbfake", "sk-upstream-SECRET-db").start()
    yield f
    f.stop()


def on_db(rig: Rig, fn: Any, *args: Any, **kw: Any) -> Any:
    async def go() -> Any:
        engine = create_engine(rig.db_url)
        try:
            return await fn(engine, *args, **kw)
        finally:
            await engine.dispose()

    return run_async(go())


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_running_gateway_follows_database_upstreams(fake: FakeUpstream, tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"upstreams": []}, secret_key=SecretStr("gateway-secret"))
    box = secret_box(rig.settings)
    try:
        assert rig.chat("db-model").status_code == 404
        info = on_db(
            rig,
            svc.create_upstream,
            {
                "name": "db-up",
                "base_url": fake.base_url,
                "api_key": fake.api_key,
                "models": ["db-model"],
                "provider": "vercel",
            },
            box=box,
        )
        wait_for(lambda: "db-up" in rig.rt.pool.by_name)  # one revision poll
        assert rig.chat("db-model").status_code == 200 and chats(fake) == 1
        up = rig.rt.pool.by_name["db-up"]
        assert up.source == "database" and up.api_key == fake.api_key

        # The one real call, with the stored key; and with a wrong key.
        result = on_db(rig, svc.test_upstream, info.id, box=box)
        assert result.ok and result.status == 200
        result = on_db(rig, svc.test_upstream, info.id, box=box, model="db-model")
        assert result.ok and chats(fake) == 2
        on_db(rig, svc.update_upstream, info.id, {"api_key": "sk-nope-0000000000"}, box=box)
        result = on_db(rig, svc.test_upstream, info.id, box=box)
        assert not result.ok and result.status == 401 and "sk-nope-0000000000" not in result.message

        # Balance refresh on demand, through the manager.
        fake.behaviour.balance = 12.5
        on_db(rig, svc.update_upstream, info.id, {"api_key": fake.api_key}, box=box)
        wait_for(lambda: rig.rt.pool.by_name["db-up"].api_key == fake.api_key)
        status = rig.call(svc.refresh_balance(rig.rt.upstreams, "db-up"))  # type: ignore[arg-type]
        assert [(s.name, s.balance_usd, s.health) for s in status] == [("db-up", 12.5, "healthy")]
        with pytest.raises(NotFound):
            rig.call(svc.refresh_balance(rig.rt.upstreams, "nope"))  # type: ignore[arg-type]

        on_db(rig, svc.update_upstream, info.id, {"enabled": False})
        wait_for(lambda: "db-up" not in rig.rt.pool.by_name)
        assert rig.chat("db-model").status_code == 404
    finally:
        rig.stop()


def test_manual_balance_spend_survives_a_restart(fake: FakeUpstream, tmp_path: Path) -> None:
    config = {
        "upstreams": [
            {
                "name": "m",
                "base_url": fake.base_url,
                "api_key": fake.api_key,
                "models": ["x"],
                "manual_balance_usd": 2.0,
            }
        ]
    }
    rig = Rig(tmp_path, config)
    try:
        rig.rt.pool.on_usage("m", 10, 0.75)
        assert rig.rt.pool.by_name["m"].acct.available() == pytest.approx(1.25)
    finally:
        rig.stop()  # saves the spend
    rig = Rig(tmp_path, config)
    try:
        assert rig.rt.pool.by_name["m"].acct.available() == pytest.approx(1.25)
        status = {s.name: s for s in rig.call(svc.upstream_status(rig.rt.pool))}
        assert status["m"].balance_source == "manual" and status["m"].balance_usd == 1.25
    finally:
        rig.stop()
    config["upstreams"][0]["manual_balance_usd"] = 5.0  # a new balance starts afresh
    rig = Rig(tmp_path, config)
    try:
        assert rig.rt.pool.by_name["m"].acct.available() == pytest.approx(5.0)
    finally:
        rig.stop()
