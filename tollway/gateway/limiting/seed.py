"""Budgets and token quotas survive restarts: the first time a backend sees a key (or a new
budget period kind), it reads what the key already used from the usage rollups. Once per key,
never per request; concurrent first requests share one read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .policy import limits_unavailable

log = logging.getLogger("tollway.limits")

# (key id, count cost since unix seconds) -> (tokens used ever, cost since then)
SeedFn = Callable[[int, float], Awaitable[tuple[int, float]]]


async def no_history(key_id: int, since: float) -> tuple[int, float]:
    return 0, 0.0


REUSE_S = 2.0  # requests that raced the first read reuse its answer instead of reading again


class Seeder:
    def __init__(self, fn: SeedFn) -> None:
        self._fn = fn
        self._pending: dict[tuple[int, float], asyncio.Future[tuple[int, float]]] = {}
        self._recent: dict[tuple[int, float], tuple[tuple[int, float], float]] = {}

    async def __call__(self, key_id: int, since: float) -> tuple[int, float]:
        slot = (key_id, since)
        recent = self._recent.get(slot)
        if recent is not None and recent[1] > time.monotonic():
            return recent[0]
        pending = self._pending.get(slot)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self._pending[slot] = future
        try:
            result = await self._fn(key_id, since)
        except Exception as exc:
            log.warning("could not read key %d's past usage for its limits", key_id, exc_info=True)
            error = limits_unavailable()
            future.set_exception(error)
            future.exception()  # retrieved: waiters raise it themselves
            raise error from exc
        except BaseException:
            future.cancel()  # cancelled: waiters must not hang
            raise
        else:
            future.set_result(result)
            if len(self._recent) > 10_000:
                self._recent.clear()
            self._recent[slot] = (result, time.monotonic() + REUSE_S)
            return result
        finally:
            del self._pending[slot]
