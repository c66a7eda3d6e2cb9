"""Budgets and token quotas survive restarts: the first time a backend sees a key (or a new
budget period kind), it reads what the key already used from the usage rollups. Once per key,
never per request; concurrent first requests share one read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .policy import limits_unavailable

log = logging.getLogger("tollway.limits")

# (key id, count cost since unix seconds) -> (tokens used ever, cost since then)
SeedFn = Callable[[int, float], Awaitable[tuple[int, float]]]


# (key ids, since) -> every id's (tokens used ever, cost since then), in one read
SeedsFn = Callable[[list[int], float], Awaitable[dict[int, tuple[int, float]]]]

BATCH = 100  # key ids per read (as the key cache's: the answer is read on the event loop)


async def no_history(key_id: int, since: float) -> tuple[int, float]:
    return 0, 0.0


class BatchedSeed:
    """A SeedFn that reads the keys asked for in one event-loop turn with one query per
    period start (`since`): a restart, or a burst of keys never seen, costs a read per batch
    rather than one per key."""

    def __init__(self, fn: SeedsFn) -> None:
        self._fn = fn
        self._asked: dict[float, dict[int, asyncio.Future[tuple[int, float]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, key_id: int, since: float) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        asked = self._asked.get(since)
        if asked is None:
            asked = self._asked[since] = {}
            loop.call_soon(self._read, since)  # once this turn's askers are all in
        future = asked.get(key_id)
        if future is None:
            future = asked[key_id] = loop.create_future()
        return await asyncio.shield(future)

    def _read(self, since: float) -> None:
        asked = list(self._asked.pop(since).items())
        for start in range(0, len(asked), BATCH):
            self._spawn(self._read_batch(since, asked[start : start + BATCH]))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_batch(
        self, since: float, batch: list[tuple[int, asyncio.Future[tuple[int, float]]]]
    ) -> None:
        try:
            found = await self._fn([key_id for key_id, _ in batch], since)
        except BaseException as exc:  # each asker raises it (Seeder: limits unavailable)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the askers raise it themselves
            if not isinstance(exc, Exception):
                raise
            return
        for key_id, future in batch:
            if not future.done():
                future.set_result(found.get(key_id, (0, 0.0)))


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
