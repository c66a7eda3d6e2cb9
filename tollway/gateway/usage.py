"""Usage events leave the request path through an in-memory buffer backed by the spool
(`spool.py`): every event emitted in one loop turn reaches the spool file with one write at the
end of the turn; a background task writes them to the database in batches and tells the spool
which are done. On shutdown it keeps trying for a bounded time; what is left stays in the spool
for the next start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tollway.core.types import UsageEvent

from .spool import Spool

log = logging.getLogger("tollway.usage")

UsageWriter = Callable[[list[UsageEvent]], Awaitable[None]]
# Told of every event once, with the rest of its loop turn, after the responses were sent
# (metrics, request log, traces: tollway/observe). Must not block; exceptions are logged.
Observer = Callable[[list[UsageEvent]], None]
# Told of every database write: (events, seconds, succeeded).
WriteObserver = Callable[[int, float, bool], None]

# Beyond this the database has been down too long: the oldest leave memory, but stay in the
# spool (replayed at the next start). Without a spool they are lost, and counted in `dropped`.
MAX_BUFFERED = 1_000_000


class UsageSink:
    def __init__(
        self,
        writer: UsageWriter,
        batch_size: int = 500,
        interval: float = 0.25,
        spool: Spool | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self._batch_size = batch_size
        self._interval = interval
        self._shutdown_timeout = shutdown_timeout
        self._buffer: list[UsageEvent] = []
        self._unspooled: list[UsageEvent] = []  # emitted this loop turn, not yet in the spool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()  # cuts a retry backoff short on shutdown
        self.written = 0
        self.dropped = 0  # gone from memory (still in the spool when there is one)
        self.healthy = True  # False while the spool cannot be written (readiness reads it)
        self.spool_errors = 0
        self.observers: list[Observer] = []
        self.on_write: WriteObserver | None = None
        self._per_turn = spool is not None  # events gathered per loop turn (spool, observers)

    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)
        self._per_turn = True

    def emit(self, event: UsageEvent) -> None:
        """Never blocks, never fails: the request path calls this."""
        self._buffer.append(event)
        if self._per_turn:
            if not self._unspooled and self._loop is not None:
                self._loop.call_soon(self._to_spool)  # one write at the end of this turn
            self._unspooled.append(event)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def pending(self) -> int:
        return len(self._buffer)

    def replay(self) -> int:
        """Adopt the segments of dead processes: their events are written first. Call after
        the spool is open, before any emit. Returns how many events were adopted."""
        if self.spool is None:
            return 0
        adopted = 0
        for path in self.spool.dead_segments():
            events = self.spool.adopt(path)
            if events is not None:
                self._buffer.extend(events)
                adopted += len(events)
                log.info("usage spool: replaying %d events from %s", len(events), path.name)
        return adopted

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._stop_event.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._to_spool()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), self._shutdown_timeout)
        if self.spool is not None:
            left = self.spool.close()
            if left:
                log.warning("usage: %d events not written yet stay in the spool", left)
        elif self._buffer:
            log.error("usage: %d events could not be written", len(self._buffer))

    async def flush(self) -> None:
        """Write everything buffered, retrying a failing database (the caller bounds it)."""
        failures = 0
        while self._buffer:
            if await self._write_batch(len(self._buffer)):
                failures = 0
                continue
            failures += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**failures))

    def _to_spool(self) -> None:
        events, self._unspooled = self._unspooled, []
        if not events:
            return
        for observer in self.observers:
            try:
                observer(events)
            except Exception:
                log.exception("usage observer %r failed", observer)
        if self.spool is None:
            return
        try:
            self.spool.append(events)
        except OSError as exc:
            self.spool_errors += 1
            if self.healthy:
                log.error("usage spool %s cannot be written: %s", self.spool.directory, exc)
            self.healthy = False
            # A write that failed half way left a torn line: go on in a fresh file.
            with contextlib.suppress(OSError):
                self.spool.rotate()
            return
        if not self.healthy:
            log.error("usage spool %s is writable again", self.spool.directory)
            self.healthy = True

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self.spool is not None:
                self._to_spool()
                try:
                    self.spool.rotate()  # what is due now lives in closed segments
                except OSError as exc:
                    log.error("usage spool: cannot start a new segment: %s", exc)
            # Write what is here now; what arrives meanwhile waits for a full batch or the
            # next interval. (Writing it at once turned a slow write into a stream of tiny
            # batches, each paying a whole transaction.)
            due = len(self._buffer)
            while due > 0 and not self._stopping:
                written = await self._write_batch(due)
                if written:
                    failures = 0
                    due -= written
                    continue
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), min(30.0, 0.5 * 2**failures))
                break

    async def _write_batch(self, due: int) -> int:
        self._to_spool()  # the spool counts every event of the batch before it is confirmed
        batch = self._buffer[: min(self._batch_size, due)]
        began = time.perf_counter()
        try:
            await self.writer(batch)
        except Exception:
            if self.on_write is not None:
                self.on_write(len(batch), time.perf_counter() - began, False)
            log.exception("writing %d usage events failed; will retry", len(batch))
            overflow = len(self._buffer) - MAX_BUFFERED
            if overflow > 0:
                del self._buffer[:overflow]
                self.dropped += overflow
                if self.spool is not None:
                    self.spool.confirm(overflow, written=False)
                    log.error("usage buffer full: %d oldest events left in the spool", overflow)
                else:
                    log.error("usage buffer full: dropped %d oldest events", overflow)
            return 0
        if self.on_write is not None:
            self.on_write(len(batch), time.perf_counter() - began, True)
        del self._buffer[: len(batch)]
        self.written += len(batch)
        if self.spool is not None:
            self.spool.confirm(len(batch))
        return len(batch)


def open_spool(directory: Path, fsync: bool) -> Spool:
    spool = Spool(directory, fsync)
    spool.open()
    return spool
