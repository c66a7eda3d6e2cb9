"""Hands usage batches to a writer process (`tollway.store.usage_worker`).

Why a process: writing a row through SQLAlchemy costs about 50 µs of CPU, and on SQLite the
driver's thread competes with the event loop for the GIL; at a few thousand requests a second
that was the largest feature cost on the proxy path (bench/README.md). Here the event loop
only serialises the batch (orjson, about 1 µs an event) and waits, asynchronously, for the
child's answer. `UsageSink` keeps the batch (and the spool its events) until the child says it
is written, so a failing database or a crashed child loses nothing: the batch is retried, on a
fresh child if needed, and the child's inserts are idempotent (a batch committed just before a
crash is not counted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

import orjson

from tollway.core.types import UsageEvent

log = logging.getLogger("tollway.usage")

ANSWER_TIMEOUT = 120.0  # a batch's transaction may wait on database locks; never forever
EXIT_TIMEOUT = 30.0  # on shutdown, for the child to finish its batch and exit


class UsageWriteFailed(Exception):
    """The child could not write the batch (its log says why); the sink retries it."""


class UsageProcess:
    def __init__(self, database_url: str, spool_dir: Path | None = None) -> None:
        self.database_url = database_url
        self.spool_dir = spool_dir
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one batch in flight: answers match batches

    async def __call__(self, events: list[UsageEvent]) -> None:
        body = orjson.dumps(events)
        async with self._lock:
            proc = await self._running()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(len(body).to_bytes(4, "big") + body)
                await proc.stdin.drain()
                head = await asyncio.wait_for(proc.stdout.readexactly(4), ANSWER_TIMEOUT)
                answer = orjson.loads(await proc.stdout.readexactly(int.from_bytes(head, "big")))
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                await self._kill()
                raise UsageWriteFailed(f"usage writer process failed: {exc!r}") from exc
            except asyncio.CancelledError:
                # Shutdown's bounded wait gave up: the child's late answer would be taken for
                # the next batch's. The batch stays in the spool; idempotent inserts make a
                # commit that happened anyway harmless.
                self._kill_now()
                raise
        if "error" in answer:
            raise UsageWriteFailed(f"usage writer: {answer['error']}")

    async def close(self) -> None:
        """Let the child finish and exit (stdin closed); kill it if it takes too long."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _running(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        # The URL travels in the environment: a command line is visible to `ps`.
        env = {**os.environ, "TOLLWAY_DATABASE_URL": self.database_url}
        env.pop("TOLLWAY_SPOOL_DIR", None)
        if self.spool_dir is not None:
            env["TOLLWAY_SPOOL_DIR"] = str(self.spool_dir)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tollway.store.usage_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        log.debug("usage writer process %d started", self._proc.pid)
        return self._proc

    def _kill_now(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
