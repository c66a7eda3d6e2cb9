"""The usage writer process on real SQLite and PostgreSQL: batches written exactly, the
database URL kept off the command line, a crashed child or a failing database losing nothing
(the sink keeps the batch and a fresh child writes it), and a clean exit on close."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from tollway.core.types import UsageEvent
from tollway.gateway.usage import UsageSink
from tollway.gateway.usage_process import UsageProcess, UsageWriteFailed
from tollway.store.db import create_engine, migrate
from tollway.store.tables import usage_records, usage_rollups
from tollway.store.usage_worker import frame, read_frame, serve


def events(n: int, start: int = 0) -> list[UsageEvent]:
    now = time.time()
    return [
        UsageEvent(
            now,
            f"req-{i}",
            None,
            "POST",
            "/v1/chat/completions",
            model="m",
            upstream="u",
            status=200,
            prompt_tokens=i,
            completion_tokens=1,
            total_tokens=i + 1,
            cost_usd=0.5,
            latency_ms=1.5,
        )
        for i in range(start, start + n)
    ]


async def stored(url: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(usage_records))).scalar()
            tokens = (await conn.execute(select(func.sum(usage_records.c.total_tokens)))).scalar()
            rolled = (await conn.execute(select(func.sum(usage_rollups.c.requests)))).scalar()
    finally:
        await engine.dispose()
    return int(rows or 0), int(tokens or 0), int(rolled or 0)


async def migrated(url: str) -> str:
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    return url


async def test_batches_are_written_exactly_and_close_exits(db_url: str) -> None:
    await migrated(db_url)
    writer = UsageProcess(db_url)
    await writer(events(300))
    await writer(events(200, start=300))
    proc = writer._proc
    assert proc is not None
    cmdline = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
    assert b"tollway.store.usage_worker" in cmdline and db_url.encode() not in cmdline
    await writer.close()
    assert proc.returncode == 0
    assert await stored(db_url) == (500, sum(i + 1 for i in range(500)), 500)


async def test_the_child_outlives_signals_to_the_group_and_ends_with_its_input(
    tmp_path: Path,
) -> None:
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path}/signals.db")
    writer = UsageProcess(url)
    await writer(events(2))
    proc = writer._proc
    assert proc is not None
    # It answered a batch, so its signal handlers are in place.
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the whole group
    proc.send_signal(signal.SIGTERM)
    await writer(events(3, start=2))  # the same child still writes
    assert writer._proc is proc
    await writer.close()
    assert proc.returncode == 0
    assert await stored(url) == (5, 15, 5)


async def test_a_crashed_child_loses_nothing(tmp_path: Path) -> None:
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path}/crash.db")
    writer = UsageProcess(url)
    sink = UsageSink(writer, batch_size=50, interval=0.05)
    sink.start()
    try:
        for ev in events(50):
            sink.emit(ev)
        for _ in range(100):
            if sink.written == 50:
                break
            await asyncio.sleep(0.05)
        first = writer._proc
        assert first is not None
        first.kill()
        await first.wait()
        for ev in events(70, start=50):
            sink.emit(ev)
    finally:
        await sink.stop()
        await writer.close()
    assert writer._proc is None
    assert sink.written == 120 and sink.dropped == 0
    assert await stored(url) == (120, sum(i + 1 for i in range(120)), 120)


async def test_a_failing_database_keeps_the_batch_for_a_retry(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/later.db"  # no schema yet: every write fails
    writer = UsageProcess(url)
    try:
        with pytest.raises(UsageWriteFailed, match="OperationalError"):
            await writer(events(5))
        await migrated(url)
        await writer(events(5))  # the same child, now that the database works
    finally:
        await writer.close()
    assert await stored(url) == (5, 15, 5)


def test_frames_round_trip_and_truncation_is_an_error(tmp_path: Path) -> None:
    assert read_frame(io.BytesIO(frame({"ok": 3}))) == b'{"ok":3}'
    assert read_frame(io.BytesIO(b"")) is None
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(b"\x00\x00"))
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(b"\x00\x00\x00\x09{}"))


async def test_worker_loop_answers_each_batch(tmp_path: Path) -> None:
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path}/loop.db")
    batch = orjson.dumps(events(3))
    stdin = io.BytesIO(len(batch).to_bytes(4, "big") + batch + b"\x00\x00\x00\x02[]")
    stdout = io.BytesIO()
    await asyncio.to_thread(serve, url, stdin, stdout)
    out = io.BytesIO(stdout.getvalue())
    assert orjson.loads(read_frame(out) or b"") == {"ok": 3}
    assert orjson.loads(read_frame(out) or b"") == {"ok": 0}
    assert await stored(url) == (3, 6, 3)


def test_in_memory_database_writes_inline() -> None:
    from tollway.core.settings import Settings
    from tollway.wiring import usage_writer as _usage_writer

    memory = Settings(database_url="sqlite+aiosqlite:///:memory:")
    engine = create_engine(memory.database_url)
    assert not isinstance(_usage_writer(memory, engine), UsageProcess)
    inline = Settings(database_url="sqlite+aiosqlite:///x.db", usage_writer="inline")
    assert not isinstance(_usage_writer(inline, engine), UsageProcess)
    default = Settings(database_url="sqlite+aiosqlite:///x.db")
    assert isinstance(_usage_writer(default, engine), UsageProcess)
    assert os.environ.get("TOLLWAY_DATABASE_URL") != memory.database_url
