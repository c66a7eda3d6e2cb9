"""`/readyz`: ready only when the database and Redis answer, an upstream is in rotation and
the process is not draining; `/healthz` stays "alive". Real PostgreSQL and Redis behind a
real TCP proxy that takes them "down" for one test."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tollway.gateway.readiness import Readiness

from .fake_upstream import FakeUpstream
from .fixtures_gateway import Stack, write_config
from .limits_support import drop_prefix, require_redis, unique_prefix
from .servers import GatewayProcess
from .tcp_proxy import TcpProxy


def _ready(url: str) -> tuple[int, dict[str, object]]:
    answer = httpx.get(url + "/readyz", timeout=5)
    return answer.status_code, answer.json()


def _wait_for(url: str, status: int, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = _ready(url)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {code}: {body}")
        time.sleep(0.05)


async def test_checks_run_once_per_cache_period_and_concurrent_polls_share_a_run() -> None:
    calls = 0
    now = [100.0]

    async def database() -> str | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return None

    async def stuck() -> str | None:
        await asyncio.sleep(30)
        return None

    ready = Readiness({"database": database}, timeout=1.0, cache=1.0, clock=lambda: now[0])
    reports = await asyncio.gather(*(ready.report() for _ in range(20)))
    assert calls == 1 and all(r.ready for r in reports)
    await ready.report()
    assert calls == 1  # cached
    now[0] += 1.5
    await ready.report()
    assert calls == 2

    ready.draining = True
    report = await ready.report()
    assert not report.ready and report.body()["status"] == "draining" and calls == 2

    slow = Readiness({"database": database, "redis": stuck}, timeout=0.05, cache=0)
    body = (await slow.report()).body()
    assert body["status"] == "unready" and body["failed"] == ["redis"]
    assert body["checks"] == {"database": "ok", "redis": "no answer within 0.05 s"}


@pytest.mark.postgres
@pytest.mark.redis
def test_readyz_flips_with_postgres_and_redis(pg_url_sync: str, tmp_path: Path) -> None:
    require_redis()
    pg = TcpProxy("127.0.0.1", 5432).start()
    rd = TcpProxy("127.0.0.1", 6379).start()
    prefix = unique_prefix()
    url = pg_url_sync.replace(":5432/", f":{pg.port}/")
    stack = Stack(
        tmp_path,
        database_url=url,
        redis_url=f"redis://127.0.0.1:{rd.port}/0",
        redis_prefix=prefix,
        ready_cache=0.2,
        ready_timeout=0.5,
    )
    try:
        body = _wait_for(stack.url, 200)
        assert body["checks"] == {"database": "ok", "upstreams": "ok", "redis": "ok"}

        pg.down()
        body = _wait_for(stack.url, 503)
        assert body["failed"] == ["database"] and body["status"] == "unready"
        assert httpx.get(stack.url + "/healthz").status_code == 200  # alive all along
        pg.up()
        _wait_for(stack.url, 200)

        rd.down()
        body = _wait_for(stack.url, 503)
        assert body["failed"] == ["redis"]
        assert "redis://" not in str(body) and "postgresql" not in str(body)
        rd.up()
        _wait_for(stack.url, 200)
    finally:
        stack.stop()
        pg.stop()
        rd.stop()
        drop_prefix(prefix)


def test_readyz_without_an_upstream_in_rotation_and_while_draining(tmp_path: Path) -> None:
    up = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    stack = Stack(
        tmp_path,
        upstreams=[{"name": "a", "base_url": up.base_url, "api_key": up.api_key, "weight": 0}],
        ready_cache=0,
    )
    try:
        code, body = _ready(stack.url)
        assert code == 503 and body["checks"]["upstreams"] == "none in rotation"
        assert body["checks"]["database"] == "ok"

        assert stack.gateway.app.begin_drain() == 0.0  # TOLLWAY_SHUTDOWN_READY_DELAY default
        code, body = _ready(stack.url)
        assert code == 503 and body["status"] == "draining" and body["failed"] == ["draining"]
    finally:
        stack.stop()
        up.stop()


def test_sigterm_says_draining_before_the_listener_closes(tmp_path: Path) -> None:
    up = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    config = write_config(
        tmp_path / "tollway.yaml",
        [{"name": "a", "base_url": up.base_url, "api_key": up.api_key, "models": ["gpt-test"]}],
    )
    env = {
        "TOLLWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}",
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_SHUTDOWN_READY_DELAY": "1.5",
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    proc = GatewayProcess(env, tmp_path)
    try:
        proc.start()
        assert proc.proc is not None
        assert _wait_for(proc.url, 200)["status"] == "ready"
        proc.proc.send_signal(signal.SIGTERM)
        code, body = _ready(proc.url)  # still listening, already out of the balancer
        assert code == 503 and body["status"] == "draining"
        assert httpx.get(proc.url + "/healthz").status_code == 200
        # It then stops by itself (uvicorn re-raises the SIGTERM it caught, once shut down).
        assert proc.proc.wait(20) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(proc.url + "/healthz")
    finally:
        proc.stop()
        up.stop()
