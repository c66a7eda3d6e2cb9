"""Tollway's benchmark: one command, one table, Tollway side by side with its peers.

    bash bench/run [--peers] [--quick] [--duration 8] [--rounds 2] [--concurrency 1,16,64]
    bash bench/run --soak 600          # memory over time under load instead

Starts a fake upstream (nginx with canned answers, never the bottleneck) and every target on
127.0.0.1, then drives each with wrk (1 thread): POST /v1/chat/completions, non-streaming and
streaming, at each concurrency, alternating the targets' order across rounds so drift cancels,
and reports the median. Then measures the streaming first-byte delay. Prints one markdown table
and writes everything as JSON under bench/results/. Everything it starts, it stops (also on
Ctrl-C). See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import first_byte
import peers
from load import catch_error, probe, run_wrk, write_lua
from machine import find_tools, git_rev, redis_databases, release_redis, uptime
from peer_targets import start_litellm, start_litellm_vk, start_portkey
from proc import Processes, RssSampler, free_port, log, signals_raise, tree_cpu_seconds
from report import Run, aggregate, first_byte_table, notes, ratios, summary, table
from targets import (
    SLOW_MODEL,
    UPSTREAM_KEY,
    Ctx,
    Target,
    start_bare,
    start_direct,
    start_nginx_hop,
    start_tollway,
)

BENCH_DIR = Path(__file__).resolve().parent
ALL_TARGETS = [
    "direct",
    "nginx",
    "bare",
    "bare-w2",
    "bare-aiohttp",
    "tollway",
    "tollway-observe",
    "tollway-redis",
    "tollway-w2",
    "litellm",
    "litellm-w2",
    "litellm-vk",
    "portkey",
]
QUICK_TARGETS = [t for t in ALL_TARGETS if t not in ("litellm-w2", "litellm-vk")]


def parse_args() -> argparse.Namespace:
    def csv(s: str) -> list[str]:
        return [x.strip() for x in s.split(",") if x.strip()]

    p = argparse.ArgumentParser(description="Benchmark Tollway against direct, bare and peers.")
    # Defaults are None so that --quick fills only what was not given.
    p.add_argument("--duration", type=float, help="seconds per measured run (8; quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each run (1)")
    p.add_argument("--rounds", type=int, help="rounds, order alternating (2; quick 1)")
    p.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in csv(s)],
        help="connection counts (1,16,64; quick 1,64)",
    )
    p.add_argument("--modes", default=["json", "stream"], type=csv, help="json,stream")
    p.add_argument("--targets", default=None, type=csv, help=f"subset of {','.join(ALL_TARGETS)}")
    p.add_argument("--peers", action="store_true", help="install/update LiteLLM and Portkey first")
    p.add_argument("--first-byte-samples", type=int, help="per target (400; quick 100)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s runs, 1 round, conc 1,64, fewer targets",
    )
    p.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="soak test instead")
    p.add_argument("--soak-target", default="tollway", choices=["tollway", "tollway-redis"])
    args = p.parse_args()
    defaults = {
        "duration": 2.0 if args.quick else 8.0,
        "warmup": 1.0,
        "rounds": 1 if args.quick else 2,
        "concurrency": [1, 64] if args.quick else [1, 16, 64],
        "first_byte_samples": 100 if args.quick else 400,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.targets = args.targets or (QUICK_TARGETS if args.quick else ALL_TARGETS)
    bad = (set(args.targets) - set(ALL_TARGETS)) | (set(args.modes) - {"json", "stream"})
    if bad:
        p.error(f"unknown target or mode: {sorted(bad)}")
    if args.rounds < 1 or args.duration < 1 or not args.concurrency:
        p.error("need --rounds >= 1, --duration >= 1 and at least one concurrency")
    if "direct" not in args.targets:
        args.targets = ["direct", *args.targets]  # the upstream itself; everything is relative
    return args


def start_targets(ctx: Ctx, names: list[str], installed: dict[str, peers.Peer]) -> list[Target]:
    """Start one at a time, so each cold start is timed without the others starting."""
    redis = iter(ctx.redis_urls)
    started = []
    for name in names:
        log(f"starting {name}")
        if name == "direct":
            t = start_direct(ctx)
            if t.skipped:
                sys.exit(f"bench: the fake upstream did not start: {t.note}")
        elif name == "nginx":
            t = start_nginx_hop(ctx)
        elif name.startswith("bare"):
            t = start_bare(ctx, name)
        elif name == "tollway":
            t = start_tollway(ctx, name, workers=1, redis_url=None)
        elif name == "tollway-observe":  # the same with /metrics and the request log on
            observe = {"TOLLWAY_METRICS_TOKEN": "bench-metrics", "TOLLWAY_REQUEST_LOG": "true"}
            t = start_tollway(ctx, name, workers=1, redis_url=None, extra_env=observe)
        elif name in ("tollway-redis", "tollway-w2"):
            url = next(redis, None)
            if url is None:
                t = Target(name, skipped=True, note="needs Redis on 127.0.0.1:6379")
            else:
                t = start_tollway(
                    ctx, name, workers=2 if name == "tollway-w2" else 1, redis_url=url
                )
        elif name in ("litellm", "litellm-w2"):
            workers = 2 if name == "litellm-w2" else 1
            t = start_litellm(ctx, installed.get("litellm"), name, workers)
        elif name == "litellm-vk":
            t = start_litellm_vk(ctx, installed.get("litellm"))
        else:
            t = start_portkey(ctx, installed.get("portkey"))
        if not t.skipped:
            log(f"{name} up in {t.cold_start_s:.2f}s")
        started.append(t)
    return started


def check_answers(targets: list[Target], modes: list[str]) -> None:
    for t in targets:
        for mode in modes if not t.skipped else []:
            wrong = probe(f"{t.origin}/v1/chat/completions", t.key, t.headers, mode == "stream")
            if wrong:
                t.skipped, t.note = True, f"{mode}: {wrong}"[:200]
                log(f"{t.name}: {t.note}")


def measure_all(ctx: Ctx, wrk: str, targets: list[Target], args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    luas = {
        (t.name, m): write_lua(ctx.tmp / f"{t.name}-{m}.lua", t.key, t.headers, m == "stream")
        for t in targets
        for m in args.modes
    }
    for rnd in range(args.rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]  # A/B, then B/A: drift cancels
        for mode in args.modes:
            for conc in args.concurrency:
                for t in order:
                    if t.skipped:
                        continue
                    log(f"round {rnd + 1}/{args.rounds} {t.name} {mode} c={conc}")
                    runs.append(
                        measure_one(ctx, wrk, t, luas[(t.name, mode)], mode, conc, rnd, args)
                    )
    return runs


def measure_one(
    ctx: Ctx,
    wrk: str,
    t: Target,
    lua: Path,
    mode: str,
    conc: int,
    rnd: int,
    args: argparse.Namespace,
) -> Run:
    url = f"{t.origin}/v1/chat/completions"
    if args.warmup > 0:
        run_wrk(wrk, url, lua, conc, args.warmup)
    loadavg = Path("/proc/loadavg").read_text().strip()
    cpu0 = tree_cpu_seconds(t.session)
    with RssSampler(t.session) as rss:
        res = run_wrk(wrk, url, lua, conc, args.duration)
    cpu = tree_cpu_seconds(t.session) - cpu0
    if t.name in ctx.procs.dead():
        t.skipped, t.note = True, f"died during {mode} c={conc}: " + ctx.procs.log_tail(t.name, 200)
    sample = ""
    if res.non_2xx + res.socket_errors and not t.skipped:
        catcher = write_lua(lua.with_suffix(".catch.lua"), t.key, t.headers, mode == "stream", True)
        sample = catch_error(wrk, url, catcher, conc)
    return Run(
        target=t.name,
        mode=mode,
        concurrency=conc,
        round=rnd,
        requests=res.requests,
        errors=res.non_2xx + res.socket_errors,
        rps=res.ok_rps,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        cpu_s=cpu,
        peak_rss_mb=rss.peak_mb,
        loadavg=loadavg,
        error_sample=sample,
    )


def measure_first_byte(ctx: Ctx, targets: list[Target], samples: int) -> list[first_byte.FirstByte]:
    path = "/v1/chat/completions"
    specs = [("direct", ctx.slow_port, path, {"Authorization": f"Bearer {UPSTREAM_KEY}"})]
    for t in targets:
        if t.first_byte and not t.skipped:
            port = int(t.origin.rsplit(":", 1)[1])
            specs.append(
                (t.name, port, path, {"Authorization": f"Bearer {t.key}", **t.slow_headers})
            )
    body = first_byte.body_for(SLOW_MODEL)
    log(f"first-byte delay: {samples} samples each for {', '.join(s[0] for s in specs)}")
    return first_byte.measure([(*s, body) for s in specs], ctx.slow_port, samples)


def main() -> int:
    args = parse_args()
    wrk, nginx = find_tools()
    if args.soak:
        import soak

        return soak.run(args, wrk, nginx)
    wanted_peers = sorted({n.split("-")[0] for n in args.targets} & {"litellm", "portkey"})
    installed = peers.install_all(wanted_peers) if args.peers else peers.check_all(wanted_peers)
    load_before = uptime()
    rows, runs, fb = [], [], []
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-bench-") as tmpdir:
        procs = Processes(Path(tmpdir))
        needs_redis = sum(n in args.targets for n in ("tollway-redis", "tollway-w2"))
        ctx = Ctx(
            procs, Path(tmpdir), nginx, free_port(), free_port(), redis_databases(needs_redis)
        )
        try:
            targets = start_targets(ctx, args.targets, installed)
            check_answers(targets, args.modes)
            runs = measure_all(ctx, wrk, targets, args)
            fb = measure_first_byte(ctx, targets, args.first_byte_samples)
        finally:
            procs.stop_all()
            for cleanup in ctx.cleanups:
                cleanup()
            release_redis(ctx.redis_urls)
    rows = aggregate(runs)
    load_after = uptime()
    out = [
        summary(targets, rows),
        "Every run (median over rounds):\n\n" + table(targets, rows),
        ratios(rows),
        "Streaming first-byte delay (upstream's first bytes -> client), slow SSE upstream:\n\n"
        + first_byte_table(fb),
        notes(targets, rows),
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; load before: {load_before}; "
        f"after: {load_after}. {args.rounds} round(s) x {args.duration:g} s per run, "
        f"medians; wrk -t1; git {git_rev()}.",
    ]
    print("\n\n".join(part for part in out if part))
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = results / f"bench-{stamp}.json"
    meta = {
        "time": stamp,
        "git": git_rev(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": load_after,
        "args": {k: v for k, v in vars(args).items()},
        "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.strip()[:80],
    }
    doc = {
        "meta": meta,
        # Keys are throwaway (a temporary database), but still kept out of files.
        "targets": [{k: v for k, v in asdict(t).items() if k != "key"} for t in targets],
        "rows": [asdict(r) for r in rows],
        "runs": [asdict(r) for r in runs],
        "first_byte": [asdict(r) for r in fb],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
    ours = [t for t in targets if t.name.startswith("tollway")]
    failed = any(t.skipped for t in ours) or any(
        r.errors for r in rows if r.target.startswith("tollway")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
