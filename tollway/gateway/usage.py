"""Usage events leave the request path through an in-memory buffer; a background task
writes them in batches and flushes what is left on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tollway.core.types import UsageEvent

log = logging.getLogger("tollway.usage")

UsageWriter = Callable[[list[UsageEvent]], Awaitable[None]]

MAX_BUFFERED = 1_000_000  # beyond this the database has been down too long: drop the oldest


class UsageSink:
    def __init__(self, writer: UsageWriter, batch_size: int = 500, interval: float = 0.25) -> None:
        self.writer = writer
        self._batch_size = batch_size
        self._interval = interval
        self._buffer: list[UsageEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.dropped = 0

    def emit(self, event: UsageEvent) -> None:
        """Never blocks, never fails: the request path calls this."""
        self._buffer.append(event)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()

    async def flush(self, retries: int = 3) -> None:
        """Write everything buffered; on shutdown a failing database gets a few more tries."""
        failures = 0
        while self._buffer:
            if await self._write_batch():
                continue
            failures += 1
            if failures > retries:
                log.error("usage: %d events could not be written", len(self._buffer))
                return
            await asyncio.sleep(0.2 * failures)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            # Write what is here now; what arrives meanwhile waits for a full batch or the
            # next interval. (Writing it at once turned a slow write into a stream of tiny
            # batches, each paying a whole transaction.)
            due = len(self._buffer)
            while due > 0 and not self._stopping:
                if await self._write_batch():
                    failures = 0
                    due -= self._batch_size
                    continue
                failures += 1
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                break

    async def _write_batch(self) -> bool:
        batch = self._buffer[: self._batch_size]
        try:
            await self.writer(batch)
        except Exception:
            log.exception("writing %d usage events failed; will retry", len(batch))
            overflow = len(self._buffer) - MAX_BUFFERED
            if overflow > 0:
                del self._buffer[:overflow]
                self.dropped += overflow
                log.error("usage buffer full: dropped %d oldest events", overflow)
            return False
        del self._buffer[: len(batch)]
        self.written += len(batch)
        return True
