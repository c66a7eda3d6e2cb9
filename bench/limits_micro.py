"""Added latency per request of each limits backend: admit + settle for a key with an rpm,
a tpm and a concurrency limit, one request at a time (latency, not throughput).

    .venv/bin/python bench/limits_micro.py [-n 20000] [--redis redis://127.0.0.1:6379/0]

Prints microseconds per request (mean and p50/p99) for: no limits (the fast path), the
in-process backend, and the Redis backend (one EVALSHA for admit, one for settle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from tollway.core.types import KeyLimits, KeyRecord
from tollway.gateway.limiting import LocalLimiter, RedisLimiter, connect
from tollway.gateway.limits import NoLimits

BIG = 10**12  # limits that never refuse: we time the bookkeeping, not the refusals


async def measure(name: str, limiter: Any, key: KeyRecord, n: int) -> None:
    for _ in range(min(1000, n)):  # warm-up: connections, script cache
        await limiter.settle(key, await limiter.admit(key, "m"), 10, 0.0001)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        admission = await limiter.admit(key, "m")
        await limiter.settle(key, admission, 10, 0.0001)
        samples.append(clock() - t0)
    samples.sort()
    us = [s / 1000 for s in samples]
    print(
        f"{name:10} mean {statistics.fmean(us):8.1f} µs   p50 {us[len(us) // 2]:8.1f} µs   "
        f"p99 {us[int(len(us) * 0.99)]:8.1f} µs   (admit + settle, n={n})"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    limits = KeyLimits(rpm=BIG, tpm=BIG, token_quota=BIG, max_parallel=BIG)
    key = KeyRecord(id=1, name="bench", prefix="tw-bench", limits=limits)
    await measure("none", NoLimits(), KeyRecord(id=2, name="free", prefix="tw-free"), args.n)
    await measure("local", LocalLimiter(), key, args.n)
    prefix = f"tollway-bench-{os.urandom(4).hex()}"
    redis_limiter = RedisLimiter(connect(args.redis), prefix)
    try:
        await measure("redis", redis_limiter, key, args.n)
    finally:
        names = [k async for k in redis_limiter.redis.scan_iter(match=f"{prefix}:*")]
        if names:
            await redis_limiter.redis.delete(*names)
        await redis_limiter.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
