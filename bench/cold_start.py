"""Tollway's cold start alone, several times: process spawn -> first good proxied completion.

    .venv/bin/python bench/cold_start.py [--runs 5] [--variants tollway,tollway-w2]

The same start as bench/run.py's targets (fresh SQLite database initialised and a key created
before the clock starts; `tollway-w2` is two workers with Redis-shared limits), against the
nginx fake upstream, each start alone; prints every time and the median per variant.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from machine import find_tools, redis_databases, release_redis
from proc import Processes, free_port, log, signals_raise
from targets import Ctx, Target, start_direct, start_tollway

VARIANTS = {"tollway": (1, False), "tollway-redis": (1, True), "tollway-w2": (2, True)}


def main() -> int:
    p = argparse.ArgumentParser(description="Time Tollway's cold start.")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--variants", default="tollway,tollway-w2")
    args = p.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if bad := set(names) - set(VARIANTS):
        p.error(f"unknown variant(s): {sorted(bad)}; known: {', '.join(VARIANTS)}")
    _, nginx = find_tools()
    times: dict[str, list[float]] = {n: [] for n in names}
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-cold-") as tmpdir:
        procs = Processes(Path(tmpdir))
        redis = redis_databases(1) if any(VARIANTS[n][1] for n in names) else []
        ctx = Ctx(procs, Path(tmpdir), nginx, free_port(), free_port(), redis)
        try:
            if start_direct(ctx).skipped:
                sys.exit("cold_start: the fake upstream did not start")
            for run in range(args.runs):
                for name in names:
                    workers, wants_redis = VARIANTS[name]
                    if wants_redis and not redis:
                        sys.exit("cold_start: needs an empty Redis database on 127.0.0.1:6379")
                    url = redis[0] if wants_redis else None
                    t = start_tollway(ctx, f"{name}-{run}", workers=workers, redis_url=url)
                    _stop(procs, t)
                    if t.cold_start_s is None:
                        sys.exit(f"cold_start: {name} did not start: {t.note}")
                    log(f"{name} run {run + 1}: {t.cold_start_s:.3f}s")
                    times[name].append(t.cold_start_s)
        finally:
            procs.stop_all()
            release_redis(redis)
    for name, values in times.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:14} median {statistics.median(values):.2f}s  ({shown})")
    return 0


def _stop(procs: Processes, t: Target) -> None:
    for proc in [p for n, p in procs.procs if n == t.name]:
        procs.stop(proc)


if __name__ == "__main__":
    sys.exit(main())
