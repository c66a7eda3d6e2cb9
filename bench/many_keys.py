"""Auth with many keys: a million keys in the database, a hundred thousand in use.

    .venv/bin/python bench/many_keys.py                      # 1,000,000 keys, 100,000 in use
    .venv/bin/python bench/many_keys.py --quick              # 50,000 / 5,000, 3 s runs
    .venv/bin/python bench/many_keys.py --keys 200000 --active 20000 --duration 5

A fresh SQLite database (`tollway init`) gets `--keys` keys written straight into it
(key_rows.py), each with every limit set. `tollway serve` then runs against the fake nginx
upstream and wrk (one thread, `--conns` connections) drives it:

- `1 key`: every request with the same key (after a warm-up run);
- `cold`: each of the `--active` keys exactly once, round robin: every request is a key
  cache miss (one database read, plus the limits' first read of the key's past usage);
- `warm`: the same keys again, round robin, for `--duration`: all cached;
- `expired`: once the key cache's TTL has passed since the last warm run, the same keys for
  `--duration`: every entry met is expired, as happens to every key in use once per TTL
  (`--ttl` sets TOLLWAY_KEY_CACHE_TTL to shorten the wait; the default is the server's).

`1 key` and `warm` alternate for `--rounds` rounds (medians), so drift on a busy machine hits
both. Memory: the server's RSS after the 1-key runs and after the cold pass, and a
tracemalloc count of the key cache and the limiter's per-key state built in this process for
`--active` keys (key_memory.py).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from key_memory import measure as measure_memory
from key_rows import insert_keys, write_many_keys_lua
from load import WrkResult, parse_wrk, probe, run_wrk, write_lua, wrk_cmd
from machine import find_tools, git_rev, uptime
from proc import (
    CLK_TCK,
    Processes,
    _stat_fields,
    _status_kb,
    free_port,
    log,
    signals_raise,
    tree_cpu_seconds,
)
from targets import Ctx, start_direct, start_tollway

from tollway.core.settings import Settings


@dataclass
class Pass:
    name: str
    result: WrkResult
    cpu_ms_per_req: float  # the server process (event loop, database threads)
    writer_ms_per_req: float  # the rest of its tree: the usage writer child
    rss_mb: tuple[float, float]  # the server process's RSS after the pass: anon, file


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tollway auth with many keys in the database.")
    p.add_argument("--keys", type=int, help="keys in the database (1,000,000; quick 50,000)")
    p.add_argument("--active", type=int, help="distinct keys in use (100,000; quick 5,000)")
    p.add_argument("--duration", type=float, help="seconds per measured run (10; quick 3)")
    p.add_argument("--warmup", type=float, default=2.0, help="1-key warm-up seconds (2)")
    p.add_argument("--rounds", type=int, help="1-key/warm rounds, medians (2; quick 1)")
    p.add_argument("--conns", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--ttl", type=float, help="TOLLWAY_KEY_CACHE_TTL for the server (its default)")
    p.add_argument("--quick", action="store_true", help="50k keys, 5k in use, 3 s runs")
    args = p.parse_args()
    defaults = {
        "keys": 50_000 if args.quick else 1_000_000,
        "active": 5_000 if args.quick else 100_000,
        "duration": 3.0 if args.quick else 10.0,
        "rounds": 1 if args.quick else 2,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.active <= args.keys:
        p.error("need 1 <= --active <= --keys")
    return args


def rss_mb(pid: int) -> tuple[float, float]:
    """(anonymous, file-backed) resident MB: SQLite may map the database file, whose pages
    count in RSS but are the page cache's, not the process's own memory."""
    return _status_kb(pid, "RssAnon") / 1024, _status_kb(pid, "RssFile") / 1024


def process_cpu_seconds(pid: int) -> float:
    fields = _stat_fields(str(pid))
    return sum(int(x) for x in fields[11:13]) / CLK_TCK if fields else 0.0  # utime, stime


def run_wrk_until(
    wrk: str, url: str, lua: Path, conns: int, limit: float, marker: Path
) -> WrkResult:
    """wrk until the script leaves `marker` (or `limit` seconds pass), then SIGINT: wrk stops
    early and prints its summary over the time it really ran."""
    cmd = wrk_cmd(wrk, url, lua, conns, limit)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + limit + 5
        while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = parse_wrk(out)
    if result is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-500:]}{err[-500:]}")
    return result


def measured(
    name: str,
    wrk: str,
    url: str,
    lua: Path,
    conns: int,
    secs: float,
    pid: int,
    marker: Path | None = None,
) -> Pass:
    tree, own = tree_cpu_seconds(pid), process_cpu_seconds(pid)
    if marker is None:
        result = run_wrk(wrk, url, lua, conns, secs)
    else:
        result = run_wrk_until(wrk, url, lua, conns, secs, marker)
    tree, own = tree_cpu_seconds(pid) - tree, process_cpu_seconds(pid) - own
    ok = max(1, result.requests - result.non_2xx)
    errors = result.non_2xx + result.socket_errors
    log(
        f"  {name}: {result.ok_rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 "
        f"{result.p99_ms:.2f} ms, {result.requests:,} requests"
        + (f", {errors} errors" if errors else "")
    )
    return Pass(name, result, own * 1e3 / ok, (tree - own) * 1e3 / ok, rss_mb(pid))


def med(passes: list[Pass], attr: str) -> float:
    return statistics.median(getattr(p.result, attr) for p in passes)


def report(args: argparse.Namespace, gen_s: float, db_mb: float, passes: list[Pass]) -> str:
    one = [p for p in passes if p.name == "1 key"]
    warm = [p for p in passes if p.name == "warm"]
    cold = [p for p in passes if p.name == "cold"]
    expired = [p for p in passes if p.name == "expired"]
    s = Settings()
    ttl = f"TTL {args.ttl:g} s (--ttl)" if args.ttl else f"TTL {s.key_cache_ttl:g} s (default)"
    lines = [
        f"{args.keys:,} keys in the database ({db_mb:,.0f} MB SQLite, written in {gen_s:.1f} s),"
        f" {args.active:,} in use; wrk -t1 -c{args.conns}; key cache: "
        f"{s.key_cache_size:,} keys (default), {ttl}",
        "",
        "| pass | runs | req/s | p50 ms | p99 ms | +p99 ms over 1 key | CPU ms/req server"
        " | CPU ms/req usage writer | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = med(one, "p99_ms")
    for group in (one, cold, warm, expired):
        if not group:
            continue
        p99 = med(group, "p99_ms")
        extra = "" if group is one else f"{p99 - base:+.2f}"
        rps = statistics.median(p.result.ok_rps for p in group)
        lines.append(
            f"| {group[0].name} | {len(group)} | {rps:,.0f}"
            f" | {med(group, 'p50_ms'):.2f} | {p99:.2f} | {extra}"
            f" | {statistics.median(p.cpu_ms_per_req for p in group):.3f}"
            f" | {statistics.median(p.writer_ms_per_req for p in group):.3f}"
            f" | {sum(p.result.non_2xx + p.result.socket_errors for p in group)} |"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    wrk, nginx = find_tools()
    load_before = uptime()
    passes: list[Pass] = []
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-keys-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        ctx = Ctx(procs, tmp, nginx, free_port(), free_port(), [])
        keys_file = tmp / "keys.txt"
        made: dict[str, float] = {}

        def make_keys(db: Path) -> str:
            log(f"writing {args.keys:,} keys ...")
            active, made["s"] = insert_keys(db, args.keys, args.active)
            made["mb"] = db.stat().st_size / 2**20
            log(f"  {made['s']:.1f} s, {made['mb']:,.0f} MB")
            keys_file.write_text("\n".join(active) + "\n")
            return active[0]

        try:
            if start_direct(ctx).skipped:
                return 1
            env = {"TOLLWAY_KEY_CACHE_TTL": str(args.ttl)} if args.ttl else None
            t = start_tollway(ctx, "tollway", 1, None, env, make_keys=make_keys)
            if t.skipped:
                log(t.note)
                return 1
            url = f"{t.origin}/v1/chat/completions"
            wrong = probe(url, t.key, {}, stream=False)
            if wrong:
                log(wrong)
                return 1
            one = write_lua(tmp / "one.lua", t.key, {}, stream=False)
            marker = tmp / "cold.done"
            cold = write_many_keys_lua(tmp / "cold.lua", keys_file, args.active, marker)
            many = write_many_keys_lua(tmp / "many.lua", keys_file)
            run_wrk(wrk, url, one, args.conns, args.warmup)  # warm-up, discarded
            pid, conns, secs = t.session, args.conns, args.duration
            passes.append(measured("1 key", wrk, url, one, conns, secs, pid))
            # Bounded by wrk's -d too: 200 requests a second at the least.
            cold_limit = args.active / 200 + 30
            passes.append(measured("cold", wrk, url, cold, conns, cold_limit, pid, marker))
            for i in range(args.rounds):
                order = [("1 key", one), ("warm", many)]
                for name, lua in order[::-1] if i % 2 else order:
                    passes.append(measured(name, wrk, url, lua, conns, secs, pid))
            ttl = args.ttl or Settings().key_cache_ttl
            log(f"waiting {ttl + 1:g} s: every cached key expires")
            time.sleep(ttl + 1)
            passes.append(measured("expired", wrk, url, many, conns, secs, pid))
        finally:
            procs.stop_all()
        (base, base_file), (cold, cold_file) = passes[0].rss_mb, passes[1].rss_mb
        end, end_file = passes[-1].rss_mb
        log("counting the cache structures with tracemalloc ...")
        memory = measure_memory(tmp / "tollway" / "tollway.db", keys_file)
    out = [
        report(args, made["s"], made["mb"], passes),
        "",
        f"Server RSS, anonymous (+ file-backed): {base:.0f} (+{base_file:.0f}) MB after the"
        f" 1-key run, {cold:.0f} (+{cold_file:.0f}) MB after the cold pass: +{cold - base:.0f} MB"
        f" for {args.active:,} keys (key cache, limit state, allocator slack);"
        f" {end:.0f} (+{end_file:.0f}) MB at the end.",
        memory,
        f"Machine: load {load_before} before, {uptime()} after; git {git_rev()}.",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
