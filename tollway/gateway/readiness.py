"""`/readyz`: may a load balancer send this process traffic?

Ready = the database answers, Redis answers (when configured), at least one upstream is in
rotation, and the process is not draining. The checks' answer is reused for `cache` seconds
(concurrent polls share one run), so a load balancer polling often costs nothing; draining
is answered at once, without checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tollway.gateway.limiting import RedisLimiter

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tollway.gateway.limits import Limiter
    from tollway.upstreams.pool import Pool

Check = Callable[[], Awaitable[str | None]]  # None = ok, else what is wrong


@dataclass(frozen=True, slots=True)
class Report:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or why not

    def body(self) -> dict[str, object]:
        failed = [name for name, state in self.checks.items() if state != "ok"]
        status = "ready" if self.ready else ("draining" if "draining" in failed else "unready")
        return {"status": status, "failed": failed, "checks": self.checks}


class Readiness:
    def __init__(
        self,
        checks: Mapping[str, Check],
        timeout: float = 1.0,
        cache: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._timeout = timeout
        self._cache = cache
        self._clock = clock
        self._last: Report | None = None
        self._until = 0.0
        self._running: asyncio.Task[Report] | None = None
        self.draining = False

    async def report(self) -> Report:
        if self.draining:
            return Report(False, {"draining": "shutting down"})
        if self._last is not None and self._clock() < self._until:
            return self._last
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        try:
            return await asyncio.shield(self._running)
        finally:
            if self._running is not None and self._running.done():
                self._running = None

    async def _run(self) -> Report:
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(self._checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        report = Report(all(state == "ok" for state in results), checks)
        self._last, self._until = report, self._clock() + self._cache
        return report

    async def _one(self, check: Check) -> str:
        try:
            problem = await asyncio.wait_for(check(), self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except Exception as exc:  # the error's kind only: never a URL or a secret
            return f"failed: {type(exc).__name__}"
        return problem or "ok"


def fleet_readiness(
    engine: AsyncEngine, pool: Pool, limiter: Limiter, timeout: float, cache: float
) -> Readiness:
    """The gateway's checks: database, upstreams in rotation, Redis when limits live there."""

    async def database() -> str | None:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return None

    async def upstreams() -> str | None:
        now = pool.clock()
        return None if any(pool.in_rotation(u, now) for u in pool.upstreams) else "none in rotation"

    checks: dict[str, Check] = {"database": database, "upstreams": upstreams}
    if isinstance(limiter, RedisLimiter):
        redis = limiter.redis

        async def redis_ping() -> str | None:
            await redis.ping()
            return None

        checks["redis"] = redis_ping
    return Readiness(checks, timeout, cache)
