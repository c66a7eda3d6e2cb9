"""Shared by the tests/test_limits_*.py modules: a controllable clock, keys with limits, real
Redis with a unique key prefix per test (other people use the same server)."""

from __future__ import annotations

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
