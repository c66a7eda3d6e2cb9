"""Process-level faults against usage: `tollway serve` as a real process under load from 32
concurrent openai-SDK clients, killed or cut off from a real database, then restarted. Each
test prints its figure (answered, rows, lost, duplicates) and asserts that every request whose
response completed has exactly one usage row.

Load lasts a few seconds: what is measured is what happens at the fault. The database outage
lasts 30 s (load runs through its first 6 s, then SIGTERM; the database comes back 30 s after it
went, and the gateway is restarted after that)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import func, select

from tollway.store.db import create_engine, migrate_sync
from tollway.store.tables import usage_records, usage_rollups

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, run_async, write_config
from .servers import GatewayProcess
from .tcp_proxy import TcpProxy

CONCURRENCY = 32
# uvicorn re-raises the SIGTERM it handled once its shutdown (lifespan included) is complete.
GRACEFUL = (0, -signal.SIGTERM)
MESSAGES = [{"role": "user", "content": "hi"}]


class Load:
    """32 async openai clients in a thread of their own, remembering the request id of every
    response that completed."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.completed: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _main(self) -> None:
        client = openai.AsyncOpenAI(
            api_key=self.key, base_url=self.url + "/v1", max_retries=0, timeout=10
        )
        await asyncio.gather(*(self._one(client) for _ in range(CONCURRENCY)))
        await client.close()

    async def _one(self, client: openai.AsyncOpenAI) -> None:
        while not self._stop.is_set():
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-test",
                    messages=MESSAGES,  # type: ignore[arg-type]
                )
                raw.parse()
                self.completed.append(raw.headers["x-request-id"])
            except openai.APIError:
                self.failed += 1
                await asyncio.sleep(0.05)


def stored_ids(db_url: str) -> tuple[list[str], int]:
    """Every request id in the usage table, and the requests counted by the hourly rollups."""

    async def fetch() -> tuple[list[str], int]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                ids = list((await conn.execute(select(usage_records.c.request_id))).scalars())
                rolled = (await conn.execute(select(func.sum(usage_rollups.c.requests)))).scalar()
        finally:
            await engine.dispose()
        return ids, int(rolled or 0)

    result: tuple[list[str], int] = run_async(fetch())
    return result


def check(name: str, completed: list[str], db_url: str) -> dict[str, int]:
    ids, rolled = stored_ids(db_url)
    answered = set(completed)
    figure = {
        "answered": len(answered),
        "rows": len(ids),
        "lost": len(answered - set(ids)),
        "duplicates": len(ids) - len(set(ids)),
    }
    print(f"\n{name}: {figure}")
    assert len(answered) == len(completed) > 0
    assert figure["lost"] == 0 and figure["duplicates"] == 0
    assert rolled == len(ids)  # rollups count each row once
    return figure


class Rig:
    def __init__(self, tmp: Path, db_url: str, **env: str) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.upstream = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
        config = write_config(
            tmp / "tollway.yaml",
            [{"name": "a", "base_url": self.upstream.base_url,
              "api_key": self.upstream.api_key, "models": ["gpt-test"]}],
        )  # fmt: skip
        migrate_sync(db_url)
        self.key = make_key(db_url)
        self.env = {
            "TOLLWAY_DATABASE_URL": db_url,
            "TOLLWAY_CONFIG": str(config),
            "TOLLWAY_SPOOL_DIR": str(tmp / "spool"),
            "TOLLWAY_LOG_LEVEL": "warning",
            "TOLLWAY_USAGE_SHUTDOWN_TIMEOUT": "2",
            **env,
        }
        self.procs: list[GatewayProcess] = []

    def gateway(self) -> GatewayProcess:
        proc = GatewayProcess(self.env, self.tmp).start()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.upstream.stop()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_sigkill_of_the_gateway_under_load_loses_no_completed_request(
    db_url: str, tmp_path: Path, rig_factory: list[Rig]
) -> None:
    # Writes every second, not every 0.25 s: the kill always finds events not yet written.
    rig = Rig(tmp_path, db_url, TOLLWAY_USAGE_FLUSH_INTERVAL="1", TOLLWAY_USAGE_BATCH_SIZE="100000")
    rig_factory.append(rig)
    first = rig.gateway()
    load = Load(first.url, rig.key).start()
    time.sleep(2.0)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    load.stop()
    before, _ = stored_ids(db_url)
    second = rig.gateway()  # the restart replays the dead process's spool before serving
    second.stop()
    assert second.proc is not None and second.proc.returncode in GRACEFUL, second.log.read_text()
    check(f"SIGKILL gateway ({db_url.split(':')[0]})", load.completed, db_url)
    in_db = len(set(before) & set(load.completed))
    print(f"  rows in the database at the kill: {in_db}")
    assert in_db < len(load.completed)  # the spool, not the database, held the rest
    left = list((tmp_path / "spool").glob("usage-*.spool"))
    assert left == [], (left, second.log.read_text())


@pytest.mark.postgres
def test_sigkill_of_the_writer_child_under_load_loses_nothing(
    pg_url_sync: str, tmp_path: Path, rig_factory: list[Rig]
) -> None:
    rig = Rig(tmp_path, pg_url_sync)
    rig_factory.append(rig)
    gw = rig.gateway()
    assert gw.proc is not None
    load = Load(gw.url, rig.key).start()
    kills = 0
    for _ in range(3):
        time.sleep(0.7)
        for pid in _children(gw.proc.pid):
            os.kill(pid, signal.SIGKILL)
            kills += 1
    time.sleep(0.7)
    load.stop()
    gw.stop()
    assert gw.proc.returncode in GRACEFUL and kills >= 2
    check(f"SIGKILL writer child x{kills} (postgresql)", load.completed, pg_url_sync)


OUTAGE_SECONDS = 30.0


@pytest.mark.postgres
def test_database_down_sigterm_during_the_outage_then_restart_loses_nothing(
    pg_url_sync: str, tmp_path: Path, rig_factory: list[Rig]
) -> None:
    from urllib.parse import urlsplit

    target = urlsplit(pg_url_sync)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    try:
        via_proxy = pg_url_sync.replace(f":{target.port}/", f":{proxy.port}/")
        rig = Rig(tmp_path, via_proxy)
        rig_factory.append(rig)
        gw = rig.gateway()
        assert gw.proc is not None
        load = Load(gw.url, rig.key).start()
        time.sleep(1.0)
        proxy.down()
        down_at = time.monotonic()
        time.sleep(6.0)  # serving on cached keys while usage piles up in the spool
        answered_in_outage = len(load.completed)
        gw.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        gw.proc.wait(60)
        stop_seconds = time.monotonic() - started
        load.stop()
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        proxy.up()
        at_exit, _ = stored_ids(pg_url_sync)
        left = sorted((tmp_path / "spool").glob("usage-*.spool"))
        rig.gateway().stop()  # restart after the outage: the spool is replayed
        figure = check("database down, SIGTERM in the outage (postgresql)", load.completed,
                       pg_url_sync)  # fmt: skip
        print(
            f"  outage {OUTAGE_SECONDS:.0f} s; rows written before the restart: {len(at_exit)},"
            f" spool files left: {len(left)}, shutdown took {stop_seconds:.1f} s"
        )
        assert gw.proc.returncode in GRACEFUL
        assert len(at_exit) < figure["answered"] and left  # the outage really held rows back
        assert answered_in_outage > 0
        assert not (tmp_path / "spool" / "dead-letter.jsonl").exists()  # an outage is no poison
    finally:
        proxy.stop()
