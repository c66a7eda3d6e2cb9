"""The usage spool, exactly-once writing and poison rows, on real SQLite and PostgreSQL:
one spool write per loop turn, segments of dead processes replayed (live ones never), replays
and retries never counted twice (rollups == raw rows), refused rows split down to the one
the database refuses (dead-lettered, never dropped), a bounded shutdown leaving the rest in
the spool, and a spool that cannot be written reported loudly."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import openai
import orjson
import pytest
from alembic import command
from sqlalchemy import Connection, func, select, text

from tollway.core.types import UsageEvent
from tollway.gateway import spool as spool_mod
from tollway.gateway.spool import Spool, read_events
from tollway.gateway.usage import UsageSink, open_spool
from tollway.store.db import alembic_config, create_engine, migrate
from tollway.store.tables import usage_records, usage_rollups, usage_rollups_daily
from tollway.store.usage_writer import write_usage


def events(n: int, start: int = 0, **fields: object) -> list[UsageEvent]:
    now = time.time()
    return [
        UsageEvent(
            now,
            f"req-{i}",
            None,
            "POST",
            "/v1/chat/completions",
            **{"model": "m", "upstream": "u", "status": 200, "total_tokens": i + 1, **fields},  # type: ignore[arg-type]
        )
        for i in range(start, start + n)
    ]


async def totals(url: str) -> dict[str, int]:
    """Raw rows, their distinct request ids and token sum, and the same sums from both rollups."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            async def one(stmt: object) -> int:
                return int((await conn.execute(stmt)).scalar() or 0)  # type: ignore[call-overload]

            return {
                "rows": await one(select(func.count()).select_from(usage_records)),
                "ids": await one(select(func.count(func.distinct(usage_records.c.request_id)))),
                "tokens": await one(select(func.sum(usage_records.c.total_tokens))),
                "hourly": await one(select(func.sum(usage_rollups.c.requests))),
                "hourly_tokens": await one(select(func.sum(usage_rollups.c.total_tokens))),
                "daily": await one(select(func.sum(usage_rollups_daily.c.requests))),
            }
    finally:
        await engine.dispose()


async def migrated(url: str) -> str:
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    return url


def consistent(t: dict[str, int], rows: int, tokens: int) -> None:
    assert t == {
        "rows": rows,
        "ids": rows,
        "tokens": tokens,
        "hourly": rows,
        "hourly_tokens": tokens,
        "daily": rows,
    }


async def test_one_spool_write_per_loop_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(spool_mod.os, "write", counting_write)

    async def never(batch: list[UsageEvent]) -> None:
        raise AssertionError("no database write expected here")

    spool = open_spool(tmp_path, fsync=False)
    sink = UsageSink(never, interval=60, spool=spool)
    sink.start()
    try:
        for ev in events(50):
            sink.emit(ev)
        assert writes == []  # nothing yet: the write happens at the end of the loop turn
        await asyncio.sleep(0)
        assert len(writes) == 1
        for ev in events(3, start=50):
            sink.emit(ev)
        await asyncio.sleep(0)
        assert len(writes) == 2
        on_disk = read_events(spool.current.path)
        assert [e.request_id for e in on_disk] == [f"req-{i}" for i in range(53)]
    finally:
        sink._stopping = True
        sink._wake.set()
        await asyncio.wait_for(sink._task, 5)  # type: ignore[arg-type]
        spool.close()


async def test_dead_segments_are_replayed_once_and_live_ones_never(
    db_url: str, tmp_path: Path
) -> None:
    url = await migrated(db_url)
    spool_dir = tmp_path / "spool"
    # A process that died: its segment is on disk, its lock gone with it.
    dead = open_spool(spool_dir, fsync=False)
    dead.append(events(40))
    for seg in dead.segments:
        os.close(seg.fd)
    # A live process: its lock is held.
    live = open_spool(spool_dir, fsync=False)
    live.append(events(7, start=1000))

    engine = create_engine(url)
    try:

        async def write(batch: list[UsageEvent]) -> None:
            await write_usage(engine, batch)

        sink = UsageSink(write, batch_size=15, interval=0.05, spool=open_spool(spool_dir, False))
        assert sink.replay() == 40
        sink.start()
        await sink.stop()
    finally:
        await engine.dispose()
    consistent(await totals(url), 40, sum(i + 1 for i in range(40)))
    left = sorted(p.name for p in spool_dir.glob("usage-*.spool"))
    assert left == [live.current.path.name]  # the dead one replayed and deleted, ours too
    live.close()


async def test_replays_and_retries_never_count_twice(db_url: str) -> None:
    url = await migrated(db_url)
    engine = create_engine(url)
    try:
        await write_usage(engine, events(300))
        await write_usage(engine, events(300))  # a whole batch replayed
        await write_usage(engine, events(250, start=200))  # overlapping: 100 old, 150 new
        await write_usage(engine, events(3, start=10) + events(3, start=10))  # within a batch
    finally:
        await engine.dispose()
    consistent(await totals(url), 450, sum(i + 1 for i in range(450)))


async def test_poison_rows_are_cleaned_and_a_refused_row_is_dead_lettered(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await migrated(db_url)
    batch = events(10)
    batch[2].model = "bad\x00model"
    batch[3].model = "x" * 1000
    batch[4].endpoint = "/v1/" + "p" * 2000 + "\r\n"
    batch[5].prompt_tokens = 2**40  # an upstream's nonsense: too big for the column
    batch[7].ts = 1e300  # cannot be stored at all, even cleaned
    dead_letter = tmp_path / "dead-letter.jsonl"
    engine = create_engine(url)
    try:
        with caplog.at_level(logging.ERROR, "tollway.usage"):
            await write_usage(engine, batch, dead_letter)
        async with engine.connect() as conn:
            stored = {
                r.request_id: r
                for r in await conn.execute(
                    select(usage_records.c.request_id, usage_records.c.model,
                           usage_records.c.endpoint, usage_records.c.prompt_tokens)
                )
            }  # fmt: skip
    finally:
        await engine.dispose()
    assert sorted(stored) == sorted(f"req-{i}" for i in range(10) if i != 7)
    assert stored["req-2"].model == "bad\ufffdmodel"
    assert stored["req-3"].model == "x" * 300
    assert len(stored["req-4"].endpoint) == 300 and "\r" not in stored["req-4"].endpoint
    assert stored["req-5"].prompt_tokens == 2**31 - 1
    buried = [orjson.loads(line) for line in dead_letter.read_bytes().splitlines()]
    assert [b["event"]["request_id"] for b in buried] == ["req-7"]
    assert "req-7" in caplog.text
    consistent(await totals(url), 9, sum(i + 1 for i in range(10) if i != 7))


async def test_shutdown_with_the_database_down_is_bounded_and_keeps_the_spool(
    db_url: str, tmp_path: Path
) -> None:
    url = await migrated(db_url)
    spool_dir = tmp_path / "spool"
    attempts = [0]

    async def down(batch: list[UsageEvent]) -> None:
        attempts[0] += 1
        raise ConnectionRefusedError("database down")

    sink = UsageSink(down, interval=0.02, spool=open_spool(spool_dir, False), shutdown_timeout=0.5)
    sink.start()
    for ev in events(120):
        sink.emit(ev)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await sink.stop()
    assert time.monotonic() - started < 10  # bounded (0.5 s asked), not "until the database"
    assert attempts[0] >= 2 and sink.written == 0

    engine = create_engine(url)
    try:

        async def write(batch: list[UsageEvent]) -> None:
            await write_usage(engine, batch)

        again = UsageSink(write, interval=0.02, spool=open_spool(spool_dir, False))
        assert again.replay() == 120
        again.start()
        await again.stop()
    finally:
        await engine.dispose()
    consistent(await totals(url), 120, sum(i + 1 for i in range(120)))
    assert list(spool_dir.glob("usage-*.spool")) == []


async def test_an_unwritable_spool_is_loud_and_usage_still_reaches_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    spool = Spool(tmp_path / "spool")
    spool.open()
    engine = create_engine(url)
    real_fd = spool.current.fd
    try:

        async def write(batch: list[UsageEvent]) -> None:
            await write_usage(engine, batch)

        sink = UsageSink(write, interval=0.02, spool=spool)
        sink.start()
        # As a full disk does: every write fails with ENOSPC.
        full = os.open("/dev/full", os.O_WRONLY)
        spool.current.fd = full
        with caplog.at_level(logging.ERROR, "tollway.usage"):
            for ev in events(5):
                sink.emit(ev)
            await asyncio.sleep(0)
        assert not sink.healthy and sink.spool_errors == 1
        assert "cannot be written" in caplog.text
        await sink.stop()
        os.close(real_fd)
    finally:
        await engine.dispose()
    consistent(await totals(url), 5, 15)


async def test_the_migration_keeps_old_duplicates_and_makes_request_ids_unique(
    db_url: str,
) -> None:
    engine = create_engine(db_url)
    try:

        def to_0002(connection: Connection) -> None:
            cfg = alembic_config(db_url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0002")

        async with engine.begin() as conn:
            await conn.run_sync(to_0002)
            for request_id in ("a", "a", "b", "a"):
                await conn.execute(
                    usage_records.insert().values(
                        ts=text("CURRENT_TIMESTAMP"), request_id=request_id, method="POST",
                        endpoint="/v1/x", status=200, stream=False, attempts=1,
                    )
                )  # fmt: skip
        await migrate(engine)
        async with engine.connect() as conn:
            ids = sorted((await conn.execute(select(usage_records.c.request_id))).scalars())
        assert len(ids) == 4 and ids[0] == "a" and ids[1].startswith("a~") and "b" in ids
        await write_usage(engine, [*events(1, start=0), UsageEvent(0.0, "a", None, "GET", "/")])
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(usage_records))).scalar()
        assert count == 5  # "a" exists: skipped; req-0 is new
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_poison_requests_on_postgresql_never_block_the_rows_behind_them(
    tmp_path: Path, pg_url_sync: str
) -> None:
    """Issue 11 finding 3: a model name with a NUL, or 1000 characters long, between ordinary
    requests. Every row is written (the poison ones cleaned), through the real writer child."""
    from .fixtures_gateway import Stack

    stack = Stack(tmp_path, database_url=pg_url_sync)
    try:
        client = stack.client()
        models = ["gpt-test"] * 5 + ["bad\x00model"] + ["gpt-test"] * 5 + ["m" * 1000]
        models += ["gpt-test"] * 5
        ids = []
        for model in models:
            if model == "gpt-test":
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
                ids.append(raw.headers["x-request-id"])
                continue
            with pytest.raises(openai.NotFoundError) as refused:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
            ids.append(refused.value.response.headers["x-request-id"])
        rows = stack.usage_rows(len(models), timeout=20)
    finally:
        stack.stop()
    by_id = {r["request_id"]: r for r in rows}
    print(f"\npoison rows (postgresql): requests {len(ids)}, rows {len(rows)}")
    assert sorted(by_id) == sorted(ids) and len(rows) == len(ids)
    assert by_id[ids[5]]["model"] == "bad\ufffdmodel"
    assert by_id[ids[11]]["model"] == "m" * 300


def test_spool_directory_defaults(tmp_path: Path) -> None:
    from tollway.core.settings import Settings

    beside = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/data/t.db")
    assert beside.spool_path() == tmp_path / "data" / "tollway-spool"
    assert Settings(database_url="postgresql+asyncpg://u@h/d").spool_path() == Path("tollway-spool")
    assert Settings(database_url="sqlite+aiosqlite:///:memory:").spool_path() is None
    chosen = Settings(database_url="postgresql+asyncpg://u@h/d", spool_dir=tmp_path / "s")
    assert chosen.spool_path() == tmp_path / "s"


def test_fsync_setting_syncs_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(spool_mod.os, "fsync", synced.append)
    for fsync in (False, True):
        spool = open_spool(tmp_path / str(fsync), fsync)
        spool.append(events(3))
        spool.append(events(2, start=3))
        spool.close()
    assert len(synced) == 2


async def test_a_spool_that_cannot_be_opened_is_loud_and_the_gateway_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tollway.core.settings import Settings
    from tollway.wiring import start_sink as _start_sink

    url = await migrated(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    engine = create_engine(url)
    try:

        async def write(batch: list[UsageEvent]) -> None:
            await write_usage(engine, batch)

        with caplog.at_level(logging.ERROR, "tollway.usage"):
            sink = await _start_sink(Settings(database_url=url), write, blocked / "spool")
        assert not sink.healthy and sink.spool is None
        assert "cannot be opened" in caplog.text
        for ev in events(4):
            sink.emit(ev)
        await sink.stop()
    finally:
        await engine.dispose()
    consistent(await totals(url), 4, 10)


async def test_a_database_without_the_schema_is_retried_whole_never_dead_lettered(
    db_url: str, tmp_path: Path
) -> None:
    """Only a refused value splits a batch: a schema problem (or an outage) is not the rows'
    fault, and dead-lettering them would take them out of billing."""
    dead_letter = tmp_path / "dead-letter.jsonl"
    batch = events(4)
    batch[1].model = "lone \ud800 surrogate"  # cleaned too: drivers cannot encode it
    engine = create_engine(db_url)
    try:
        with pytest.raises(Exception, match="usage_records"):
            await write_usage(engine, batch, dead_letter)
        assert not dead_letter.exists()
        await migrate(engine)
        await write_usage(engine, batch, dead_letter)
    finally:
        await engine.dispose()
    assert not dead_letter.exists()
    consistent(await totals(db_url), 4, 10)


async def test_events_dropped_from_memory_stay_in_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the memory bound during a long outage the oldest events leave memory, not the
    spool: their segment is kept for the next start, which writes them."""
    import tollway.gateway.usage as usage_mod

    monkeypatch.setattr(usage_mod, "MAX_BUFFERED", 5)

    async def down(batch: list[UsageEvent]) -> None:
        raise ConnectionRefusedError("database down")

    spool_dir = tmp_path / "spool"
    sink = UsageSink(down, interval=3600, spool=open_spool(spool_dir, False))
    for ev in events(8):
        sink.emit(ev)
    assert await sink._write_batch(8) == 0  # spools the 8, fails, drops the oldest 3 from memory
    assert sink.pending() == 5 and sink.dropped == 3
    assert sink.spool is not None and sink.spool.close() == 5
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    engine = create_engine(url)
    try:

        async def write(batch: list[UsageEvent]) -> None:
            await write_usage(engine, batch)

        again = UsageSink(write, spool=open_spool(spool_dir, False))
        assert again.replay() == 8
        again.start()
        await again.stop()
    finally:
        await engine.dispose()
    consistent(await totals(url), 8, 36)


def test_segments_of_earlier_versions_and_other_field_lists_are_read(tmp_path: Path) -> None:
    """A line of objects (earlier versions) and rows under a header naming a field this
    version does not know: both replay; a torn line is skipped, not fatal."""
    path = tmp_path / "usage-1-old-1.spool"
    old = {"ts": 1.0, "request_id": "old-1", "key_id": 1, "method": "POST", "endpoint": "/v1/x"}
    header = {"fields": ["ts", "request_id", "key_id", "method", "endpoint", "gone_field"]}
    path.write_bytes(
        orjson.dumps(old)
        + b"\n"
        + orjson.dumps(header)
        + b"\n"
        + orjson.dumps([[2.0, "new-1", 1, "POST", "/v1/y", "x"]])
        + b"\n"
        + b'[[3.0, "torn'
    )
    events = read_events(path)
    assert [(e.request_id, e.endpoint) for e in events] == [("old-1", "/v1/x"), ("new-1", "/v1/y")]
