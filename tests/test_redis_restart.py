"""A Redis restart mid-load, on a private `redis-server` this test starts, kills and starts
again on the same port (the machine's shared Redis is never touched). What it must show:
`max_parallel` holds right after the restart (each instance puts back the slots it holds:
before its next admit on its own connection, and within a second by its restart watcher), and
what the rate windows admit (they start empty: up to one extra window's worth)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from aiohttp import web

from tollway.core.settings import Settings
from tollway.gateway.limiting import RedisLimiter
from tollway.store.db import migrate_sync

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key
from .pool_rig import CHAT_PATH
from .servers import GatewayThread, free_port

pytestmark = pytest.mark.redis
HOLD_S = 4.0  # how long the upstream keeps the first requests (they span the restart)


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed; CI runs this")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis().start()
    yield server
    server.kill()


class Counting:
    """An upstream answer that holds each request and counts how many are held at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    async def __call__(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if b"parallel" in body:  # a request of the max_parallel key
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                await asyncio.sleep(HOLD_S if b"hold" in body else 0.05)
            finally:
                with self.lock:
                    self.now -= 1
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def chat(url: str, key: str, text: str = "parallel") -> int:
    r = httpx.post(
        url + CHAT_PATH,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )
    return r.status_code


def limiter(g: GatewayThread) -> RedisLimiter:
    rt = g.app.runtime
    assert rt is not None and isinstance(rt.limiter, RedisLimiter)
    return rt.limiter


def test_max_parallel_holds_across_a_redis_restart(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    fake = FakeUpstream("a", "sk-upstream-SECRET-a").start()
    counting = Counting()
    fake.behaviour.respond = counting
    config = {
        "upstreams": [
            {"name": "a", "base_url": fake.base_url, "api_key": fake.api_key, "models": ["m"]}
        ]
    }
    (tmp_path / "tollway.yaml").write_text(yaml.safe_dump(config))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    migrate_sync(db_url)
    settings = Settings(
        database_url=db_url,
        config=tmp_path / "tollway.yaml",
        redis_url=private_redis.url,
        redis_prefix="restart",
        usage_writer="inline",
    )
    one, two = GatewayThread(settings).start(), GatewayThread(settings).start()
    parallel = make_key(db_url, max_parallel=4)
    rpm = make_key(db_url, rpm=5)
    pool = ThreadPoolExecutor(16)
    try:
        held = [pool.submit(chat, one.url, parallel, "parallel hold") for _ in range(4)]
        deadline = time.monotonic() + 10
        while counting.now < 4:
            assert time.monotonic() < deadline, "the first four never reached the upstream"
            time.sleep(0.02)
        assert chat(one.url, parallel) == 429  # full
        rpm_before = sum(chat(two.url, rpm, "hi") == 200 for _ in range(7))

        private_redis.kill()
        private_redis.start()  # empty: no windows, no slots
        # The first limited request each instance sends reconnects; instance one puts its
        # four slots back on that connection before anything else.
        deadline = time.monotonic() + 10
        while (status := chat(one.url, parallel)) == 503:  # limits_unavailable until then
            assert time.monotonic() < deadline, "limits did not come back"
            time.sleep(0.1)
        assert status == 429
        # Instance two holds nothing; instance one's watcher re-registered its slots for
        # the whole fleet within a second of noticing the new run_id.
        deadline = time.monotonic() + 10
        while limiter(one).restarts_seen == 0:
            assert time.monotonic() < deadline, "instance one did not notice the restart"
            time.sleep(0.05)
        after = [pool.submit(chat, two.url, parallel) for _ in range(8)]
        statuses = [f.result() for f in after]
        assert all(s in (429, 503) for s in statuses), statuses
        assert [f.result() for f in held] == [200] * 4
        assert counting.most <= 4
        # Slots come back when the held requests end.
        assert chat(two.url, parallel) == 200

        rpm_after = sum(chat(two.url, rpm, "hi") == 200 for _ in range(7))
        print(
            f"\nmax_parallel 4: at most {counting.most} at once across the restart; "
            f"rpm 5: {rpm_before} admitted before the restart and {rpm_after} more within "
            "the same minute after it (the windows start empty)"
        )
        assert rpm_before == 5 and rpm_after <= 5
    finally:
        pool.shutdown(wait=True)
        one.stop()
        two.stop()
        fake.stop()
