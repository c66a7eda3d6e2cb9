"""Throughput of a fleet: 1, 2, 3... `tollway serve` instances on one PostgreSQL database and
one Redis, each with its own wrk driving it at the same time, against the nginx fake upstream.

    .venv/bin/python bench/fleet.py --instances 1,2,3 --duration 8 --concurrency 64

Everything binds 127.0.0.1; the PostgreSQL database (`tollway_bench_<random>`) and the Redis key
prefix are made for the run and removed at its end. The key has every limit set (never
refusing), so every instance admits through Redis and records usage in PostgreSQL: what a
fleet pays. On one machine the instances share its cores (and wrk's): this shows what the
shared state costs and how a fleet scales on one box, not on several.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
from fake_upstream import MODEL
from load import run_wrk, write_lua
from machine import find_tools
from nginx import nginx_cmd, upstream_conf
from proc import Processes, free_port, log, signals_raise
from targets import BIN, HOST, UPSTREAM_KEY

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS_URL = "redis://127.0.0.1:6379/0"


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(database="postgres", **PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _wait_ready(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def measure(n: int, env: dict[str, str], key: str, args: argparse.Namespace, tmp: Path) -> float:
    (tmp / f"logs-{n}").mkdir()
    procs = Processes(tmp / f"logs-{n}")
    wrk, _ = find_tools()
    try:
        urls = []
        for i in range(n):
            port = free_port()
            procs.start(
                f"tollway-{i}",
                [str(BIN / "tollway"), "serve"],
                cwd=tmp,
                env={**env, "TOLLWAY_PORT": str(port)},
            )
            urls.append(f"http://{HOST}:{port}")
        for url in urls:
            _wait_ready(url)
        lua = write_lua(tmp / "fleet.lua", key, {}, stream=False)
        conns = max(1, args.concurrency // n)
        for url in urls:  # warm-up
            run_wrk(wrk, url + "/v1/chat/completions", lua, conns, 1)
        with ThreadPoolExecutor(n) as pool:
            results = list(
                pool.map(
                    lambda u: run_wrk(wrk, u + "/v1/chat/completions", lua, conns, args.duration),
                    urls,
                )
            )
        total = sum(r.requests / r.duration_s for r in results)
        errors = sum(r.non_2xx + r.socket_errors for r in results)
        log(f"{n} instance(s): {total:,.0f} req/s in all, {errors} errors")
        return total
    finally:
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64, help="in all, split evenly")
    args = parser.parse_args()
    counts = [int(x) for x in args.instances.split(",")]
    db = f"tollway_bench_{secrets.token_hex(4)}"
    prefix = f"bench-fleet-{secrets.token_hex(4)}"
    _, nginx = find_tools()
    with tempfile.TemporaryDirectory(prefix="tollway-fleet-") as tmpdir, signals_raise():
        tmp = Path(tmpdir)
        (tmp / "upstream-logs").mkdir()
        upstream = Processes(tmp / "upstream-logs")
        up_port = free_port()
        upstream.start("upstream", nginx_cmd(nginx, upstream_conf(tmp / "upstream", up_port)))
        asyncio.run(_pg(f'CREATE DATABASE "{db}"'))
        try:
            (tmp / "upstreams.yaml").write_text(
                "upstreams:\n  - name: bench-upstream\n"
                f"    base_url: http://{HOST}:{up_port}/v1\n"
                f"    api_key: {UPSTREAM_KEY}\n    models: [{MODEL}]\n"
            )
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")},
                "TOLLWAY_HOST": HOST,
                "TOLLWAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
                "TOLLWAY_REDIS_URL": REDIS_URL,
                "TOLLWAY_REDIS_PREFIX": prefix,
                "TOLLWAY_CONFIG": str(tmp / "upstreams.yaml"),
                "TOLLWAY_SPOOL_DIR": str(tmp / "spool"),
                "TOLLWAY_LOG_LEVEL": "warning",
            }
            subprocess.run([str(BIN / "tollway"), "migrate"], env=env, check=True, cwd=tmp)
            made = subprocess.run(
                [sys.executable, str(Path(__file__).parent / "make_key.py")],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            key = str(json.loads(made.stdout)["key"])
            figures = {n: measure(n, env, key, args, tmp) for n in counts}
        finally:
            upstream.stop_all()
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for name in client.scan_iter(f"{prefix}*"):
                client.delete(name)
    base = figures[counts[0]]
    print("\n| instances | req/s (all) | vs first |\n| ---: | ---: | ---: |")
    for n, value in figures.items():
        print(f"| {n} | {value:,.0f} | {value / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
