"""What the usage spool costs the event loop: `UsageSink.emit` plus the one spool write at the
end of each loop turn, for a realistic event, with no database (the writer is never reached).

    .venv/bin/python bench/spool_micro.py [-n 200000] [--per-turn 1,8,64]

Prints microseconds per event and per loop turn for: no spool (emit alone, the old sink), the
spool (one os.write per turn), and the spool with fsync. The spool lives in a temporary
directory, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tollway.core.types import UsageEvent
from tollway.gateway.usage import UsageSink, open_spool


def event(i: int) -> UsageEvent:
    return UsageEvent(
        time.time(), f"{i:032x}", 1, "POST", "/v1/chat/completions", model="gpt-4o-mini",
        upstream="openai-1", upstream_model="gpt-4o-mini", status=200, prompt_tokens=12,
        completion_tokens=40, total_tokens=52, cost_usd=0.00003, latency_ms=123.4, ttft_ms=80.1,
        attempts=1,
    )  # fmt: skip


async def never(batch: list[UsageEvent]) -> None:
    raise RuntimeError("not measured")


async def measure(name: str, directory: Path | None, fsync: bool, n: int, per_turn: int) -> None:
    spool = open_spool(directory, fsync) if directory is not None else None
    sink = UsageSink(never, batch_size=10**9, interval=3600, spool=spool)
    sink.start()
    events = [event(i) for i in range(n)]
    turns = n // per_turn
    clock = time.perf_counter_ns
    spent = 0
    for t in range(turns):
        chunk = events[t * per_turn : (t + 1) * per_turn]
        t0 = clock()
        for ev in chunk:
            sink.emit(ev)
        sink._to_spool()  # what the scheduled call_soon does at the end of the turn
        spent += clock() - t0
        sink._buffer.clear()  # keep memory flat: we time emit + spool, not a growing list
        if spool is not None:
            spool.confirm(per_turn, written=False)
            if t % 1000 == 999:
                spool.rotate()
    sink._stopping = True
    sink._wake.set()
    if sink._task is not None:
        await sink._task
    if spool is not None:
        spool.close()
        for p in spool.directory.glob("usage-*.spool"):
            p.unlink()
    per_event = spent / 1000 / (turns * per_turn)
    print(
        f"{name:12} {per_turn:3} events/turn: {per_event:6.2f} µs per event,"
        f" {per_event * per_turn:7.2f} µs per loop turn"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--per-turn", default="1,8,64")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for per_turn in (int(x) for x in args.per_turn.split(",")):
            await measure("no spool", None, False, args.n, per_turn)
            await measure("spool", Path(tmp), False, args.n, per_turn)
            await measure("spool+fsync", Path(tmp), True, min(args.n, 2000 * per_turn), per_turn)


if __name__ == "__main__":
    asyncio.run(main())
