"""Long prompts: what agents send (50-200k tokens, hundreds of KB of JSON a request).

    .venv/bin/python bench/long_context.py [--quick] [--sizes 64k,256k,1m] [--concurrency 16]
    bash bench/run --long-context [...]     # the same, after bench/run's venv check

The fake upstream (nginx) and the targets are bench/run.py's; only the request differs: a
long agent conversation (bench/long_body.py) of each size, non-streaming and streaming, driven
by wrk (1 thread) from a file. Rounds alternate the targets' order; the table shows medians,
CPU per request of each target's process tree, and Tollway's req/s over `bare` (the same
server and client stack passing bytes through) and over the peers. JSON under bench/results/.
Everything it starts, it stops (also on Ctrl-C). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import peers
from load import catch_error, probe, run_wrk, write_lua
from long_body import make_body
from machine import find_tools, git_rev, uptime
from proc import Processes, RssSampler, free_port, log, signals_raise, tree_cpu_seconds
from report import Row, Run, _md, _num, aggregate
from run import start_targets
from targets import Ctx, Target

BENCH_DIR = Path(__file__).resolve().parent
ALL_TARGETS = ["direct", "bare", "tollway", "portkey", "litellm"]
PEER_NAMES = ("portkey", "litellm")
# What Tollway must reach, per reference: req/s at least this share of theirs.
GOALS = {"bare": 0.9, "portkey": 8.0, "litellm": None}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([km]?)b?", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64k, 256k, 1m)")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2)]


def size_label(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)}MB"
    return f"{size // 1024}KB" if size % 1024 == 0 else f"{size}B"


def parse_args() -> argparse.Namespace:
    def csv(s: str) -> list[str]:
        return [x.strip() for x in s.split(",") if x.strip()]

    p = argparse.ArgumentParser(description="Long-prompt benchmark: Tollway vs bare and peers.")
    # Defaults are None so that --quick fills only what was not given (as bench/run.py).
    p.add_argument("--duration", type=float, help="seconds per measured run (8; quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each run (1)")
    p.add_argument("--rounds", type=int, help="rounds, order alternating (2; quick 1)")
    p.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in csv(s)],
        default=[64 * 1024, 256 * 1024, 1024 * 1024],
        help="request body sizes (64k,256k,1m)",
    )
    p.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in csv(s)], help="connection counts (16)"
    )
    p.add_argument("--modes", default=["json", "stream"], type=csv, help="json,stream")
    p.add_argument("--targets", default=None, type=csv, help=f"subset of {','.join(ALL_TARGETS)}")
    p.add_argument("--peers", action="store_true", help="install/update LiteLLM and Portkey first")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s runs, 1 round")
    args = p.parse_args()
    defaults = {
        "duration": 2.0 if args.quick else 8.0,
        "warmup": 1.0,
        "rounds": 1 if args.quick else 2,
        "concurrency": [16],
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.targets = args.targets or ALL_TARGETS
    bad = (set(args.targets) - set(ALL_TARGETS)) | (set(args.modes) - {"json", "stream"})
    if bad:
        p.error(f"unknown target or mode: {sorted(bad)}")
    if args.rounds < 1 or args.duration < 1 or not args.concurrency or not args.sizes:
        p.error("need --rounds >= 1, --duration >= 1, a concurrency and a size")
    if "direct" not in args.targets:
        args.targets = ["direct", *args.targets]  # the upstream itself: the ceiling
    return args


def label(mode: str, size: int) -> str:
    """The run's `mode` in report.Run/Row terms: one mode per size, so aggregate() works."""
    return f"{mode} {size_label(size)}"


def write_bodies(tmp: Path, sizes: list[int], modes: list[str]) -> dict[tuple[int, str], Path]:
    files = {}
    for size in sizes:
        for mode in modes:
            path = tmp / f"body-{size}-{mode}.json"
            path.write_bytes(make_body(size, mode == "stream"))
            files[(size, mode)] = path
    return files


def check_answers(targets: list[Target], bodies: dict[tuple[int, str], Path]) -> None:
    """Every target answers every body right once before anything is measured."""
    for t in targets:
        for (size, mode), path in bodies.items():
            if t.skipped:
                break
            url = f"{t.origin}/v1/chat/completions"
            wrong = probe(url, t.key, t.headers, mode == "stream", path.read_bytes())
            if wrong:
                t.skipped, t.note = True, f"{label(mode, size)}: {wrong}"[:200]
                log(f"{t.name}: {t.note}")


def measure(
    ctx: Ctx,
    wrk: str,
    t: Target,
    body: Path,
    mode: str,
    size: int,
    conc: int,
    rnd: int,
    args: argparse.Namespace,
) -> Run:
    url = f"{t.origin}/v1/chat/completions"
    stream = mode == "stream"
    lua = write_lua(ctx.tmp / f"{t.name}-{mode}-{size}.lua", t.key, t.headers, stream, False, body)
    if args.warmup > 0:
        run_wrk(wrk, url, lua, conc, args.warmup)
    loadavg = Path("/proc/loadavg").read_text().strip()
    cpu0 = tree_cpu_seconds(t.session)
    with RssSampler(t.session) as rss:
        res = run_wrk(wrk, url, lua, conc, args.duration)
    cpu = tree_cpu_seconds(t.session) - cpu0
    if t.name in ctx.procs.dead():
        t.skipped, t.note = True, f"died: {ctx.procs.log_tail(t.name, 200)}"
    sample = ""
    if res.non_2xx + res.socket_errors and not t.skipped:
        catcher = write_lua(lua.with_suffix(".catch.lua"), t.key, t.headers, stream, True, body)
        sample = catch_error(wrk, url, catcher, conc)
    return Run(
        target=t.name,
        mode=label(mode, size),
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


def measure_all(
    ctx: Ctx,
    wrk: str,
    targets: list[Target],
    bodies: dict[tuple[int, str], Path],
    args: argparse.Namespace,
) -> list[Run]:
    runs = []
    for rnd in range(args.rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]  # A/B, then B/A: drift cancels
        for size in args.sizes:
            for mode in args.modes:
                for conc in args.concurrency:
                    for t in order:
                        if t.skipped:
                            continue
                        log(f"round {rnd + 1}/{args.rounds} {t.name} {label(mode, size)} c={conc}")
                        body = bodies[(size, mode)]
                        runs.append(measure(ctx, wrk, t, body, mode, size, conc, rnd, args))
    return runs


def _ratio(a: Row | None, b: Row | None) -> float | None:
    return a.rps / b.rps if a and b and b.rps else None


def table(targets: list[Target], rows: list[Row]) -> str:
    """Every run: one line per size, mode, concurrency and target; req/s over `bare`'s."""
    by = {(r.target, r.mode, r.concurrency): r for r in rows}
    header = ["size / mode", "conc", "target", "req/s", "p50 ms", "p99 ms", "CPU ms/req"]
    header += ["peak RSS MB", "x bare", "errors"]
    lines = []
    for mode, conc in dict.fromkeys((r.mode, r.concurrency) for r in rows):
        for t in targets:
            row = by.get((t.name, mode, conc))
            if row is None:
                continue
            ratio = _ratio(row, by.get(("bare", mode, conc)))
            lines.append(
                [
                    mode,
                    str(conc),
                    t.name,
                    f"{row.rps:,.0f}",
                    f"{row.p50_ms:.2f}" if row.requests else "none done",
                    f"{row.p99_ms:.2f}" if row.requests else "",
                    _num(row.cpu_s_per_1k, ".3f"),  # s per 1k requests = ms per request
                    f"{row.peak_rss_mb:.0f}",
                    _num(ratio, ".2f"),
                    str(row.errors),
                ]
            )
    lines += [[f"not run: {t.note}", "", t.name, *[""] * 7] for t in targets if t.skipped]
    return _md(header, lines, left=3)


def goals(rows: list[Row]) -> str:
    """Tollway's req/s over each reference's, against the goal for it (marked)."""
    by = {(r.target, r.mode, r.concurrency): r for r in rows}
    refs = [n for n in GOALS if any(r.target == n for r in rows)]
    if not any(r.target == "tollway" for r in rows) or not refs:
        return ""
    header = ["size / mode", "conc"]
    header += [f"tollway / {n}" + (f" (goal >= {g:g})" if g else "") for n, g in GOALS.items()]
    lines = []
    for mode, conc in dict.fromkeys((r.mode, r.concurrency) for r in rows):
        ours = by.get(("tollway", mode, conc))
        cells = [mode, str(conc)]
        for name, goal in GOALS.items():
            ratio = _ratio(ours, by.get((name, mode, conc)))
            mark = "" if ratio is None or goal is None else (" ok" if ratio >= goal else " MISS")
            cells.append(f"{ratio:.2f}x{mark}" if ratio is not None else "not run")
        lines.append(cells)
    return "Tollway's req/s over each reference's:\n\n" + _md(header, lines)


def main() -> int:
    args = parse_args()
    wrk, nginx = find_tools()
    wanted = sorted(set(args.targets) & set(PEER_NAMES))
    installed = peers.install_all(wanted) if args.peers else peers.check_all(wanted)
    load_before = uptime()
    runs: list[Run] = []
    targets: list[Target] = []
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-longctx-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        # slow_port: no slow upstream here (no first-byte figures); its port stays unused.
        ctx = Ctx(procs, tmp, nginx, free_port(), free_port(), [])
        try:
            bodies = write_bodies(tmp, args.sizes, args.modes)
            targets = start_targets(ctx, args.targets, installed)
            check_answers(targets, bodies)
            runs = measure_all(ctx, wrk, targets, bodies, args)
        finally:
            procs.stop_all()
            for cleanup in ctx.cleanups:
                cleanup()
    rows = aggregate(runs)
    load_after = uptime()
    notes = "\n".join(f"- `{t.name}`: {t.note}" for t in targets if t.note)
    errors = "\n".join(
        f"- errors of `{r.target}` {r.mode} c={r.concurrency}: {r.error_sample}"
        for r in rows
        if r.error_sample
    )
    out = [
        "Long prompts (median over rounds):\n\n" + table(targets, rows),
        goals(rows),
        notes,
        errors,
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; load before: {load_before}; "
        f"after: {load_after}. {args.rounds} round(s) x {args.duration:g} s per run, "
        f"medians; wrk -t1; git {git_rev()}.",
    ]
    print("\n\n".join(part for part in out if part))
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = results / f"long-context-{stamp}.json"
    doc = {
        "meta": {
            "time": stamp,
            "git": git_rev(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": load_after,
            "args": vars(args),
        },
        # Keys are throwaway (a temporary database), but still kept out of files.
        "targets": [{k: v for k, v in asdict(t).items() if k != "key"} for t in targets],
        "rows": [asdict(r) for r in rows],
        "runs": [asdict(r) for r in runs],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
    ours = [t for t in targets if t.name == "tollway"]
    failed = any(t.skipped for t in ours) or any(r.errors for r in rows if r.target == "tollway")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
