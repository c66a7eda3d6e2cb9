"""Usage reports over millions of rows: generate a usage table (default 5,000,000 rows over
30 days) plus its hourly rollups in a SQLite database with Tollway's schema, then time every
report the admin API, CLI and UI run, each as the service layer runs it.

    .venv/bin/python bench/usage_queries.py                  # 5M rows in a temp dir
    .venv/bin/python bench/usage_queries.py --rows 500000 --db /tmp/u.db --keep

Rows are written with plain sqlite3 in big transactions (the usage writer's batching would
take an hour for 5M rows); the rollups are then built by one GROUP BY, the same sums the
usage writer keeps current per batch. A raw-table scan of the same totals is timed next to
the rollup answer to show what the rollups save.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tollway.services import usage
from tollway.store.db import create_engine, migrate_sync

KEYS = 300
MODELS = [f"model-{i}" for i in range(20)]
UPSTREAMS = [f"up-{i}" for i in range(6)]
ENDPOINTS = ["/v1/chat/completions"] * 8 + ["/v1/embeddings", "/v1/responses"]
FMT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite


def generate(path: Path, rows: int, days: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    span = (end - start).total_seconds()
    # Skewed like real traffic: a few keys make most requests; each key uses a few models.
    weights = [1 / (k + 1) ** 0.8 for k in range(KEYS)]
    key_models = {k: rnd.sample(MODELS, 3) for k in range(1, KEYS + 1)}
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = datetime.now(UTC).strftime(FMT)
    con.executemany(
        "INSERT INTO api_keys (id, key_hash, prefix, name, enabled, created_at, updated_at,"
        " budget_period) VALUES (?, ?, ?, ?, 1, ?, ?, 'none')",
        [(k, f"{k:064x}", f"tw-{k:07d}", f"key {k}", now, now) for k in range(1, KEYS + 1)],
    )
    t0 = time.perf_counter()
    batch = 200_000
    done = 0
    # Sorted timestamps, as a gateway writes them.
    while done < rows:
        n = min(batch, rows - done)
        keys = rnd.choices(range(1, KEYS + 1), weights=weights, k=n)
        records = []
        for i, key in enumerate(keys):
            ts = start + timedelta(seconds=span * (done + i) / rows)
            status = 200 if rnd.random() > 0.03 else rnd.choice((429, 500, 502))
            p = rnd.randint(10, 2000)
            c = rnd.randint(0, 800) if status == 200 else 0
            records.append(
                (
                    ts.strftime(FMT), f"req{done + i:010d}", key, "POST", rnd.choice(ENDPOINTS),
                    rnd.choice(key_models[key]), rnd.choice(UPSTREAMS), status,
                    p, c, p + c, (p * 2.5 + c * 10) / 1e6, rnd.uniform(80, 3000),
                )
            )  # fmt: skip
        con.executemany(
            "INSERT INTO usage_records (ts, request_id, key_id, method, endpoint, model,"
            " upstream, status, stream, prompt_tokens, completion_tokens, total_tokens, cost_usd,"
            " latency_ms, attempts) VALUES (?,?,?,?,?,?,?,?,0,?,?,?,?,?,1)",
            records,
        )
        con.commit()
        done += n
        print(f"\r  {done:,} rows ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
    print()
    t1 = time.perf_counter()
    con.execute(
        "INSERT INTO usage_rollups (hour, key_id, model, upstream, endpoint, requests, errors,"
        " prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms_sum)"
        " SELECT substr(ts, 1, 13) || ':00:00.000000', coalesce(key_id, 0), coalesce(model, ''),"
        " coalesce(upstream, ''), endpoint, count(*), sum(status >= 400),"
        " sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)),"
        " sum(coalesce(total_tokens, 0)), sum(coalesce(cost_usd, 0)),"
        " sum(coalesce(latency_ms, 0)) FROM usage_records GROUP BY 1, 2, 3, 4, 5"
    )
    con.execute(
        "INSERT INTO usage_rollups_daily (day, key_id, model, upstream, endpoint, requests,"
        " errors, prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms_sum)"
        " SELECT substr(hour, 1, 10) || ' 00:00:00.000000', key_id, model, upstream, endpoint,"
        " sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens),"
        " sum(total_tokens), sum(cost_usd), sum(latency_ms_sum) FROM usage_rollups"
        " GROUP BY 1, 2, 3, 4, 5"
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()
    print(f"  rollups built in {time.perf_counter() - t1:.0f} s")


def counts(path: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(path)
    raw = con.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    hourly = con.execute("SELECT count(*) FROM usage_rollups").fetchone()[0]
    daily = con.execute("SELECT count(*) FROM usage_rollups_daily").fetchone()[0]
    con.close()
    return int(raw), int(hourly), int(daily)


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    await fn()  # warm the page cache and the connection pool
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


async def measure(url: str, repeat: int) -> list[dict[str, Any]]:
    engine = create_engine(url)
    now = datetime.now(UTC)
    d1, d7, d30 = now - timedelta(days=1), now - timedelta(days=7), now - timedelta(days=30)

    async def csv_one_key_day() -> int:
        n = 0
        async for chunk in await usage.export_csv(engine, key_id=5, start=d1):
            n += chunk.count("\n")
        return n

    async def raw_scan_totals() -> Any:
        # What a report would cost without rollups: the same sums over raw rows.
        from sqlalchemy import text

        async with engine.connect() as conn:
            return (
                await conn.execute(
                    text(
                        "SELECT count(*), sum(total_tokens), sum(cost_usd) FROM usage_records"
                        " WHERE ts >= :s"
                    ),
                    {"s": d30.strftime(FMT)},
                )
            ).one()

    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("totals, all time", lambda: usage.totals(engine)),
        ("totals, one key, 30 days", lambda: usage.totals(engine, key_id=1, start=d30)),
        ("top 10 keys, 30 days", lambda: usage.top_keys(engine, start=d30)),
        ("per model, 30 days", lambda: usage.by_model(engine, start=d30)),
        ("per upstream, 7 days", lambda: usage.by_upstream(engine, start=d7)),
        ("series by hour, 7 days", lambda: usage.timeseries(engine, start=d7, bucket="hour")),
        ("series by day, 30 days", lambda: usage.timeseries(engine, start=d30, bucket="day")),
        ("series by day, one key", lambda: usage.timeseries(engine, start=d30, key_id=3,
                                                           bucket="day")),
        ("full report, 30 days", lambda: usage.report(engine, start=d30, bucket="day")),
        ("key-stats (busiest key)", lambda: usage.key_stats(engine, 1)),
        ("key-stats (quiet key)", lambda: usage.key_stats(engine, KEYS)),
        ("records, first page", lambda: usage.list_records(engine, limit=50)),
        ("records, errors of a key", lambda: usage.list_records(engine, key_id=2,
                                                                status="error")),
        ("records, one model, 1 day", lambda: usage.list_records(engine, model="model-3",
                                                                 start=d1)),
        ("CSV, one key, 1 day", csv_one_key_day),
        ("raw scan: totals, 30 days", raw_scan_totals),
    ]  # fmt: skip
    results = []
    for name, fn in cases:
        median, worst = await timed(fn, repeat)
        results.append({"query": name, "median_ms": round(median, 1), "max_ms": round(worst, 1)})
        print(f"  {name:<30} median {median:9.1f} ms   max {worst:9.1f} ms")
    await engine.dispose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="tollway-usage-bench-")
        args.db = Path(tmp.name) / "usage.db"
    url = f"sqlite+aiosqlite:///{args.db}"
    if args.db.exists():
        t = time.perf_counter()
        migrate_sync(url)  # an older database gets its daily rollups backfilled here
        print(f"schema up to date ({time.perf_counter() - t:.1f} s)")
    if not args.db.exists() or counts(args.db)[0] != args.rows:
        args.db.unlink(missing_ok=True)
        migrate_sync(url)
        print(f"generating {args.rows:,} usage rows over {args.days} days in {args.db}")
        generate(args.db, args.rows, args.days)
    raw, hourly, daily = counts(args.db)
    size_mb = args.db.stat().st_size / 1e6
    print(f"{raw:,} usage rows, {hourly:,} hourly + {daily:,} daily rollups, {size_mb:,.0f} MB")
    results = asyncio.run(measure(url, args.repeat))
    out = Path(__file__).parent / "results" / f"usage-queries-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": raw, "hourly_rollups": hourly, "daily_rollups": daily,
                               "db_mb": round(size_mb),
                               "results": results}, indent=2))  # fmt: skip
    print(f"results: {out}")
    if tmp is not None and not args.keep:
        tmp.cleanup()


if __name__ == "__main__":
    main()
