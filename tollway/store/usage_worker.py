"""The usage writer's own process: `python -m tollway.store.usage_worker`.

Reads batches of usage events from stdin and writes each with `write_usage` (raw rows,
rollups, keys' last use, one transaction), answering every batch on stdout. Frames both ways
are a 4-byte big-endian length and an orjson document: a list of events in, `{"ok": n}` or
`{"error": "..."}` out. Rows the database refuses
even cleaned go to the spool directory's dead-letter file (TOLLWAY_SPOOL_DIR).
Exits when stdin closes (the gateway stopped or died), after the batch
in hand; it ignores SIGINT and SIGTERM, which reach it with the gateway's. The database URL
comes from TOLLWAY_DATABASE_URL (never the command line, where `ps` would show its password).
Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO

import orjson

from tollway.core.types import UsageEvent

from .db import create_engine
from .usage_writer import write_usage

log = logging.getLogger("tollway.usage")

DEAD_LETTER = "dead-letter.jsonl"  # events the database refused even cleaned, in the spool dir


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame's body, or None at a clean end of input."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise EOFError("truncated frame header")
    size = int.from_bytes(head, "big")
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("truncated frame")
    return body


def frame(document: object) -> bytes:
    body = orjson.dumps(document)
    return len(body).to_bytes(4, "big") + body


def serve(url: str, stdin: IO[bytes], stdout: IO[bytes], dead_letter: Path | None = None) -> None:
    loop = asyncio.new_event_loop()
    engine = create_engine(url, pool_size=1, max_overflow=0)  # one batch at a time
    try:
        while (body := read_frame(stdin)) is not None:
            events = [UsageEvent(**fields) for fields in orjson.loads(body)]
            try:
                loop.run_until_complete(write_usage(engine, events, dead_letter))
                reply: dict[str, object] = {"ok": len(events)}
            except Exception as exc:  # the gateway keeps the batch and retries later
                log.warning("writing %d usage events failed: %r", len(events), exc)
                reply = {"error": type(exc).__name__}
            stdout.write(frame(reply))
            stdout.flush()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


def main() -> None:
    # Ctrl-C or a service manager signals the whole process group: the gateway then flushes
    # its last batches here, so this process ends only when its input closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=os.environ.get("TOLLWAY_LOG_LEVEL", "info").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    url = os.environ.get("TOLLWAY_DATABASE_URL")
    if not url:
        sys.exit("TOLLWAY_DATABASE_URL is not set")
    spool = os.environ.get("TOLLWAY_SPOOL_DIR")
    dead_letter = Path(spool) / DEAD_LETTER if spool else None
    # EOFError, BrokenPipeError: the gateway went away mid-frame; nothing left to answer.
    with contextlib.suppress(EOFError, BrokenPipeError):
        serve(url, sys.stdin.buffer, sys.stdout.buffer, dead_letter)


if __name__ == "__main__":
    main()
