"""Shared by the tests/test_limits_*.py modules: a controllable clock, keys with limits, real
Redis with a unique key prefix per test (other people use the same server)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from tollway.core.types import KeyLimits, KeyRecord
from tollway.gateway.limiting import LocalLimiter, RedisLimiter, connect
from tollway.gateway.limiting.seed import SeedFn, no_history

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE = "Redis not reachable on 127.0.0.1:6379; CI runs these"


def require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{UNREACHABLE} ({exc!r})")
        pytest.skip(UNREACHABLE)


def unique_prefix() -> str:
    return f"tollway-test-{secrets.token_hex(6)}"


def drop_prefix(prefix: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    names = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    if names:
        r.delete(*names)


class Clock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key(key_id: int = 1, **limits: Any) -> KeyRecord:
    return KeyRecord(id=key_id, name="k", prefix="tw-test", limits=KeyLimits(**limits))


class CountingSeed:
    """A seed function standing in for the usage rollups; counts how often it is asked."""

    def __init__(self, tokens: int = 0, cost: float = 0.0) -> None:
        self.tokens = tokens
        self.cost = cost
        self.calls: list[tuple[int, float]] = []

    async def __call__(self, key_id: int, since: float) -> tuple[int, float]:
        self.calls.append((key_id, since))
        return self.tokens, self.cost


Factory = Callable[..., Any]


async def backend_factory(kind: str) -> AsyncIterator[Factory]:
    """Yields make(clock, seed=...) building limiters of one kind; Redis ones share a prefix,
    so two made by one factory act as two instances of one deployment."""
    made: list[Any] = []
    prefix = unique_prefix()
    if kind == "redis":
        require_redis()

    def make(clock: Clock, seed: SeedFn = no_history, **kw: Any) -> Any:
        limiter: Any
        if kind == "local":
            limiter = LocalLimiter(seed, clock)
        else:
            limiter = RedisLimiter(connect(REDIS_URL), prefix, seed, clock, **kw)
        made.append(limiter)
        return limiter

    try:
        yield make
    finally:
        for limiter in made:
            await limiter.close()
        if kind == "redis":
            drop_prefix(prefix)


class TcpProxy:
    """A TCP relay to Redis that a test can cut and restore, to play an outage."""

    def __init__(self, target_port: int = 6379) -> None:
        import threading

        from .servers import free_port

        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in self._writers:
            w.close()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    def start(self) -> TcpProxy:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
