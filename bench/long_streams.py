"""Many long streams through one gateway: memory per open stream and delay per chunk.

    .venv/bin/python bench/long_streams.py                 # 10,000 streams x 30 s at 50/s
    .venv/bin/python bench/long_streams.py --quick         # 200 streams x 5 s
    .venv/bin/python bench/long_streams.py --shapes 1000x50,10000x5,10000x50 --seconds 30

Real streams last tens of seconds at 20-100 tokens a second. A fake upstream
(bench/stream_upstream.py) sends every stream `--seconds` x `--rate` chunks, each stamped with
the monotonic clock when written; load clients (bench/stream_client.py, several processes)
open `--streams` streams over `--ramp` seconds and record the delay of every chunk. Each shape
runs against `direct` (the upstream itself: the baseline delay), the bare Python hop and
Tollway, with every count of `--workers` (2: `TOLLWAY_WORKERS=2` with Redis, against
`bare-w2`). Each target is started fresh for each shape; its process tree's RSS is read before
the load and once every stream is open: (open - idle) / open streams is the memory a stream
costs. Tables in markdown, everything as JSON under bench/results/. Every process it starts
has a time bound of its own and is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from long_streams_report import Measured, Shape, checks, merge_clients, relate, table
from machine import git_rev, redis_databases, release_redis, uptime
from proc import (
    HOST,
    Processes,
    RssSampler,
    free_port,
    log,
    signals_raise,
    tree_cpu_seconds,
    tree_rss_mb,
)
from targets import BARE_KEY, UPSTREAM_KEY, Ctx, Target, spawn, start_bare, start_tollway

BENCH_DIR = Path(__file__).resolve().parent
BASE_TARGETS = ("direct", "bare", "tollway")
FILE_RESERVE = 4096
WARM_UP_STREAMS = 50


def parse_args() -> argparse.Namespace:
    def csv(s: str) -> list[str]:
        return [x.strip() for x in s.split(",") if x.strip()]

    p = argparse.ArgumentParser(description="Many long streams: memory and delay per chunk.")
    p.add_argument("--streams", type=int, help="concurrent streams (10000; quick 200)")
    p.add_argument("--seconds", type=float, help="each stream's length (30; quick 5)")
    p.add_argument("--rate", type=float, help="chunks per second per stream (50)")
    p.add_argument("--shapes", type=csv, help="STREAMSxRATE,... instead of --streams/--rate")
    p.add_argument("--workers", type=lambda s: [int(x) for x in csv(s)], help="1,2 (quick 1)")
    p.add_argument("--targets", type=csv, default=list(BASE_TARGETS), help="direct,bare,tollway")
    p.add_argument("--ramp", type=float, help="seconds to open all streams (min(10, seconds/3))")
    p.add_argument("--client-procs", type=int, default=2, help="load client processes")
    p.add_argument("--upstream-procs", type=int, default=2, help="fake upstream processes")
    p.add_argument("--slots", type=int, default=10, help="upstream timer ticks per interval")
    p.add_argument("--redis-db", type=int, help="Redis db for 2 workers (an empty one; emptied)")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 streams x 5 s, 1 worker")
    args = p.parse_args()
    args.streams = args.streams or (200 if args.quick else 10_000)
    args.seconds = args.seconds or (5.0 if args.quick else 30.0)
    args.rate = args.rate or 50.0
    args.workers = args.workers or ([1] if args.quick else [1, 2])
    if args.ramp is None:
        args.ramp = min(10.0, args.seconds / 3)
    try:
        specs = args.shapes or [f"{args.streams}x{args.rate:g}"]
        pairs = [x.split("x") for x in specs]
        args.shape_list = [Shape(int(s), float(r), args.seconds) for s, r in pairs]
    except ValueError:
        p.error("--shapes takes STREAMSxRATE,... e.g. 1000x50,10000x5")
    if set(args.targets) - set(BASE_TARGETS) or not set(args.workers) <= {1, 2}:
        p.error(f"--targets from {','.join(BASE_TARGETS)}; --workers from 1,2")
    if args.ramp >= args.seconds:
        p.error("--ramp must be shorter than --seconds (all streams must be open at once)")
    names = ["direct"] if "direct" in args.targets else []
    for base in ("bare", "tollway"):
        if base in args.targets:
            names += [base if w == 1 else f"{base}-w{w}" for w in args.workers]
    args.names = names
    return args


def raise_file_limit(streams: int) -> int:
    """Every process inherits it: the gateway holds two sockets a stream (client, upstream),
    and Tollway caps its connections at (soft limit - 64) / 2 (gateway/edge.py)."""
    want = max(65536, 4 * streams + FILE_RESERVE)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # root may raise it
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def start_upstream(ctx: Ctx, shape: Shape, args: argparse.Namespace, budget: float) -> Target:
    cmd = [
        sys.executable,
        str(BENCH_DIR / "stream_upstream.py"),
        f"--port={ctx.upstream_port}",
        f"--rate={shape.rate:g}",
        f"--seconds={shape.seconds:g}",
        f"--procs={args.upstream_procs}",
        f"--slots={args.slots}",
        f"--lifetime={budget:.0f}",
    ]
    t = Target(f"upstream-{shape.name}", f"http://{HOST}:{ctx.upstream_port}", UPSTREAM_KEY)
    return spawn(ctx, t, cmd)


def start_target(ctx: Ctx, name: str, upstream: Target, redis_url: str | None) -> Target:
    if name == "direct":
        t = Target("direct", upstream.origin, UPSTREAM_KEY, session=0)
        t.note = "the fake stream upstream itself (the baseline delay)"
        return t
    if name.startswith("bare"):
        return start_bare(ctx, name)
    workers = 2 if name.endswith("-w2") else 1
    if workers > 1 and redis_url is None:
        return Target(name, skipped=True, note="needs Redis on 127.0.0.1:6379")
    return start_tollway(ctx, name, workers, redis_url if workers > 1 else None)


def warm_up(port: int, key: str, streams: int) -> None:
    """A few short streams first: what the first stream of a process loads or builds (code
    paths, caches, pooled upstream connections) is not memory per stream."""
    cmd = [
        sys.executable,
        str(BENCH_DIR / "stream_client.py"),
        f"--port={port}",
        f"--key={key}",
        f"--streams={streams}",
        "--chunks=3",
        "--max-tokens=3",
        "--deadline=20",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=40, check=False)
    if f'"ok": {streams},' not in done.stdout:
        log(f"warm-up streams did not all end well: {done.stdout[-300:]}{done.stderr[-300:]}")


def settled_rss(session: int, limit_s: float = 5.0) -> float:
    """The tree's RSS once it stops moving (two reads 0.25 s apart within 0.1 MB): right
    after the warm-up, the usage writer may still be busy."""
    last = tree_rss_mb(session)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_rss_mb(session)
        if abs(now - last) < 0.1:
            return now
        last = now
    return last


def median_rss(session: int, samples: int = 3) -> float:
    values = []
    for i in range(samples):
        if i:
            time.sleep(0.2)
        values.append(tree_rss_mb(session))
    return statistics.median(values)


def run_load(
    ctx: Ctx, t: Target, upstream: Target, shape: Shape, args: argparse.Namespace
) -> Measured:
    m = Measured(shape.name, t.name, shape.streams, note=t.note)
    port = int(t.origin.rsplit(":", 1)[1])
    key = BARE_KEY if t.name.startswith("bare") else t.key
    deadline = args.ramp + shape.seconds * 1.5 + 15
    per = [shape.streams // args.client_procs] * args.client_procs
    per[0] += shape.streams - sum(per)
    names = []
    warm_up(port, key, min(WARM_UP_STREAMS, shape.streams))
    if t.session:
        m.rss_idle_mb = settled_rss(t.session)
    cpu0 = tree_cpu_seconds(t.session) if t.session else 0.0
    up0 = tree_cpu_seconds(upstream.session)
    started = time.monotonic()
    epoch = time.monotonic_ns()
    for i, n in enumerate(p for p in per if p > 0):
        name = f"load-{shape.name}-{t.name}-{i}"
        cmd = [
            sys.executable,
            str(BENCH_DIR / "stream_client.py"),
            f"--port={port}",
            f"--key={key}",
            f"--streams={n}",
            f"--ramp={args.ramp:g}",
            f"--chunks={shape.chunks}",
            f"--deadline={deadline:.0f}",
            f"--epoch-ns={epoch}",
        ]
        ctx.procs.start(name, cmd)
        names.append(name)
    sampler = RssSampler(t.session, interval=0.5) if t.session else None
    results: list[dict[str, Any]] = []
    try:
        with sampler or contextlib.nullcontext():
            wait_for_load(ctx, t, m, names, started + deadline + 20)
    finally:
        if sampler:
            m.peak_rss_mb = sampler.peak_mb
        for name, proc in [(n, p) for n, p in ctx.procs.procs if n in names]:
            if proc.poll() is None:
                log(f"{name} still running: stopped")
            ctx.procs.stop(proc)
    m.wall_s = time.monotonic() - started

    for name in names:
        for line in ctx.procs.log_tail(name, 10**9).splitlines():
            if line.startswith("RESULT "):
                results.append(json.loads(line[7:]))
    merge_clients(m, results, shape.chunks)
    if t.session:
        m.target_cpu_pct = 100 * (tree_cpu_seconds(t.session) - cpu0) / m.wall_s
        if m.rss_open_mb is not None and m.rss_idle_mb is not None and m.opened:
            m.kb_per_stream = (m.rss_open_mb - m.rss_idle_mb) * 1024 / m.opened
    m.upstream_cpu_pct = 100 * (tree_cpu_seconds(upstream.session) - up0) / m.wall_s
    m.client_cpu_pct = 100 * sum(float(r["cpu_s"]) for r in results) / m.wall_s
    return m


def wait_for_load(ctx: Ctx, t: Target, m: Measured, names: list[str], until: float) -> None:
    """Until every load process has exited (or `until`): once all of them say every stream
    is open, the target's RSS is read."""
    started = time.monotonic()
    while time.monotonic() < until:
        logs = [ctx.procs.log_tail(n, 10**9) for n in names]
        if m.all_open_after_s is None and all("\nOPEN " in "\n" + text for text in logs):
            m.all_open_after_s = time.monotonic() - started
            if t.session:
                m.rss_open_mb = median_rss(t.session)
        if all(n in ctx.procs.dead() for n in names):
            return
        time.sleep(0.1)


def stop_target(ctx: Ctx, t: Target) -> None:
    for proc in [p for n, p in ctx.procs.procs if n == t.name]:
        ctx.procs.stop(proc)


def run_shape(
    ctx: Ctx, shape: Shape, args: argparse.Namespace, redis_url: str | None
) -> list[Measured]:
    per_target = args.ramp + shape.seconds * 1.5 + 60
    upstream = start_upstream(ctx, shape, args, per_target * len(args.names) + 120)
    if upstream.skipped:
        sys.exit(f"bench: the stream upstream did not start: {upstream.note}")
    rows = []
    try:
        for name in args.names:
            log(f"{shape.name} x {shape.seconds:g} s: starting {name}")
            t = start_target(ctx, name, upstream, redis_url)
            if t.skipped:
                rows.append(Measured(shape.name, name, shape.streams, note=t.note))
                continue
            log(f"{shape.name}: {name} up; {shape.streams} streams over {args.ramp:g} s")
            try:
                m = run_load(ctx, t, upstream, shape, args)
            finally:
                stop_target(ctx, t)
                if name.startswith("tollway-w"):
                    release_redis([redis_url] if redis_url else [])
            log(
                f"{shape.name} {name}: {m.ok}/{m.streams} ok, {m.error_count} errors, "
                f"p99 {m.p99_ms} ms, RSS idle/open {m.rss_idle_mb}/{m.rss_open_mb} MB"
            )
            rows.append(m)
    finally:
        stop_target(ctx, upstream)
    return rows


def main() -> int:
    args = parse_args()
    limit = raise_file_limit(max(s.streams for s in args.shape_list))
    cap = (limit - 64) // 2
    log(f"RLIMIT_NOFILE {limit} for every process: Tollway's derived connection cap {cap}")
    most = max(s.streams for s in args.shape_list)
    if most > cap:
        log(
            f"WARNING: {most} streams need {2 * most + 64} open files in one gateway process; "
            f"the hard limit here is {limit} (raise it: ulimit -Hn, or the container's nofile): "
            "one process will refuse some (2 workers split them)"
        )
    load_before = uptime()
    rows: list[Measured] = []
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-streams-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        redis_urls: list[str] = []
        if any(n.startswith("tollway-w") for n in args.names):
            if args.redis_db is not None:
                redis_urls = [f"redis://{HOST}:6379/{args.redis_db}"]
            else:
                redis_urls = redis_databases(1)
        ctx = Ctx(procs, tmp, "", free_port(), free_port(), redis_urls)
        try:
            for shape in args.shape_list:
                rows += run_shape(ctx, shape, args, redis_urls[0] if redis_urls else None)
        finally:
            procs.stop_all()
            release_redis(redis_urls)
    relate(rows)
    load_after = uptime()
    print("\n\n".join(part for part in (table(rows), checks(rows)) if part))
    notes = [
        f"Each stream {args.seconds:g} s; streams opened over {args.ramp:g} s; "
        f"{args.client_procs} load processes, {args.upstream_procs} upstream processes "
        f"({args.slots} ticks per chunk interval). RLIMIT_NOFILE {limit} (Tollway's "
        f"connection cap per process {cap}).",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; load before: {load_before}; "
        f"after: {load_after}; git {git_rev()}. CPU % is of one core; on a small machine the "
        "upstream and the load share the cores with the target.",
    ]
    print("\n" + "\n".join(notes))
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = results / f"long-streams-{stamp}.json"
    meta = {
        "time": stamp,
        "git": git_rev(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": load_after,
        "nofile": limit,
        "args": {k: v for k, v in vars(args).items() if k != "shape_list"},
        "shapes": [asdict(s) for s in args.shape_list],
    }
    path.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"\nwritten to {path.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
    failed = any(r.error_count or r.note.startswith("failed") for r in rows if r.target != "direct")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
