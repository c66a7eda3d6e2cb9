"""Soak: Tollway under steady load for N seconds, its memory sampled every 5 s.

    bash bench/run --soak 600 [--soak-target tollway-redis]

Two wrk processes run side by side for the whole time (non-streaming and streaming, 32
connections each). The process tree's RSS is sampled every 5 s; the trend is the least-squares
slope in MB per minute over the samples after the first fifth (warm-up: caches and pools
filling). A flat line is what "no growth" means; the sample table shows it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from load import parse_wrk, probe, write_lua, wrk_cmd
from machine import git_rev, redis_databases, release_redis, uptime
from proc import Processes, free_port, log, max_process_hwm_mb, signals_raise, tree_rss_mb
from targets import Ctx, start_direct, start_tollway

BENCH_DIR = Path(__file__).resolve().parent
INTERVAL = 5.0
CONNS = 32  # per wrk process


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(m for _, m in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mx) * (m - my) for t, m in points)
    return cov / var * 60


def run(args: argparse.Namespace, wrk: str, nginx: str) -> int:
    seconds = max(10.0, float(args.soak))
    samples: list[tuple[float, float]] = []
    results = []
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-soak-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        redis = redis_databases(1 if args.soak_target == "tollway-redis" else 0)
        ctx = Ctx(procs, tmp, nginx, free_port(), free_port(), redis)
        wrks: list[subprocess.Popen[str]] = []
        try:
            if start_direct(ctx).skipped:
                return 1
            t = start_tollway(ctx, args.soak_target, 1, redis[0] if redis else None)
            if t.skipped:
                log(t.note)
                return 1
            url = f"{t.origin}/v1/chat/completions"
            for mode in ("json", "stream"):
                wrong = probe(url, t.key, {}, mode == "stream")
                if wrong:
                    log(f"{mode}: {wrong}")
                    return 1
                lua = write_lua(tmp / f"soak-{mode}.lua", t.key, {}, mode == "stream")
                wrks.append(
                    subprocess.Popen(
                        wrk_cmd(wrk, url, lua, CONNS, seconds),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        text=True,
                    )
                )
            start = time.monotonic()
            log(f"soak: {seconds:g}s on {t.name}, RSS every {INTERVAL:g}s")
            # Bounded: at most one sample per interval until the duration (plus slack) is over.
            for i in range(int(seconds / INTERVAL) + 3):
                samples.append((time.monotonic() - start, tree_rss_mb(t.session)))
                if i % 12 == 0:
                    log(f"  t={samples[-1][0]:5.0f}s  RSS {samples[-1][1]:.1f} MB")
                if all(w.poll() is not None for w in wrks):
                    break
                time.sleep(max(0.0, start + (i + 1) * INTERVAL - time.monotonic()))
            for w in wrks:
                out, _ = w.communicate(timeout=60)
                results.append(parse_wrk(out))
            hwm = max_process_hwm_mb(t.session)
        finally:
            for w in wrks:
                if w.poll() is None:
                    w.kill()
                    w.wait()
            procs.stop_all()
            release_redis(redis)
    steady = [p for p in samples if p[0] >= samples[-1][0] / 5] if samples else []
    slope = slope_mb_per_min(steady)
    requests = sum(r.requests for r in results if r)
    errors = sum(r.non_2xx + r.socket_errors for r in results if r)
    lines = ["| t s | RSS MB |", "| ---: | ---: |"]
    step = max(1, len(samples) // 20)  # about 20 rows, whatever the duration
    lines += [f"| {t:.0f} | {m:.1f} |" for t, m in samples[::step]]
    rss = [m for _, m in steady] or [0.0]
    print("\n".join(lines))
    print(
        f"\nsoak {t.name}: {seconds:g}s, {requests:,} requests ({requests / seconds:,.0f}/s), "
        f"{errors} errors; RSS after warm-up {min(rss):.1f}-{max(rss):.1f} MB, "
        f"trend {slope if slope is not None else float('nan'):+.3f} MB/min; largest process "
        f"peak {hwm:.1f} MB; load {uptime()}"
    )
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc = {
        "target": t.name,
        "git": git_rev(),
        "seconds": seconds,
        "requests": requests,
        "errors": errors,
        "slope_mb_per_min": slope,
        "max_process_hwm_mb": hwm,
        "samples": samples,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"written to {path.relative_to(BENCH_DIR.parent)}")
    return 1 if errors else 0
