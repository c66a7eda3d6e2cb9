"""Usage reports over millions of rows: generate a usage table (default 5,000,000 rows over
30 days) with its rollups in SQLite or PostgreSQL, then time every report the admin API, CLI
and UI run (each as the service layer runs it, and each page as a whole).

    .venv/bin/python bench/usage_queries.py                  # 5M rows, SQLite in a temp dir
    .venv/bin/python bench/usage_queries.py --rows 500000 --db /tmp/u.db --keep
    .venv/bin/python bench/usage_queries.py --rows 50000000 \
        --db-url postgresql+asyncpg://postgres@127.0.0.1:5432/reports_bench

Generation (bench/usage_gen.py) writes raw rows and the hourly/daily rollups at revision
0009, then migrates to head: the narrower rollups and latency histograms are built by the
migration that adds them, as on an upgraded installation. A database that already holds
--rows rows is reused (PostgreSQL: a different count drops Tollway's tables in it and starts
again, so point it at a database of its own). A raw-table scan of the same totals is timed
next to the rollup answer to show what the rollups save.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.usage_gen import (
    BASE_REVISION,
    KEYS,
    generate_pg,
    generate_sqlite,
    reset_pg,
    upgrade,
)
from tollway.services import usage
from tollway.services.usage_latency import latency_series
from tollway.store.db import create_engine
from tollway.ui.pages.dashboard import page_reads


async def _counts(url: str) -> tuple[int, int, int] | None:
    from sqlalchemy import text

    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            out = []
            for table in ("usage_records", "usage_rollups", "usage_rollups_daily"):
                out.append(
                    int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() or 0)
                )
            return out[0], out[1], out[2]
    except Exception:  # no such table: a new database
        return None
    finally:
        await engine.dispose()


def counts(url: str) -> tuple[int, int, int] | None:
    return asyncio.run(_counts(url))


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    await fn()  # warm the page cache and the connection pool
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def cases(engine: Any, max_id: int) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """Every read a view makes, named by the view; "page" rows run a whole page's reads."""
    now = datetime.now(UTC)
    h24, d1, d7, d30 = (now - timedelta(hours=24), now - timedelta(days=1),
                        now - timedelta(days=7), now - timedelta(days=30))  # fmt: skip
    day_ago_hour = (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)

    async def csv_one_key_day() -> int:
        n = 0
        async for chunk in await usage.export_csv(engine, key_id=5, start=d1):
            n += chunk.count("\n")
        return n

    async def raw_scan_totals() -> Any:
        # What a report would cost without rollups: the same sums over raw rows.
        from sqlalchemy import func, select

        from tollway.store.tables import usage_records as u

        async with engine.connect() as conn:
            stmt = select(func.count(), func.sum(u.c.total_tokens), func.sum(u.c.cost_usd))
            return (await conn.execute(stmt.where(u.c.ts >= d30))).one()

    def dashboard(length: timedelta, bucket: str, **f: Any) -> Callable[[], Awaitable[Any]]:
        async def page() -> None:  # what ui/pages/dashboard.py awaits (its reads at once)
            await page_reads(engine, now - length, now, bucket, f)

        return page

    async def overview() -> None:  # ui/pages/overview.py's live block (every 5 s)
        await usage.list_records(engine, limit=10)
        await usage.totals(engine, start=now - timedelta(hours=24))
        await usage.totals(engine)

    async def explorer() -> None:  # ui/pages/usage.py, no filter
        await usage.by_model(engine, limit=200)
        await usage.list_records(engine, limit=50)
        await usage.filtered_totals(engine)

    async def key_page() -> None:  # ui/pages/key_view.py for the busiest key
        await usage.key_stats(engine, 1, recent=10)
        await usage.list_records(engine, key_id=1, status="error", limit=10)
        await usage.timeseries(engine, bucket="day", key_id=1)

    deep = max(max_id // 2, 1)
    return [
        ("page: overview", overview),
        ("page: dashboard 24h", dashboard(timedelta(hours=24), "hour")),
        ("page: dashboard 7d", dashboard(timedelta(days=7), "hour")),
        ("page: dashboard 30d", dashboard(timedelta(days=30), "day")),
        ("page: dashboard 30d, one model", dashboard(timedelta(days=30), "day", model="model-3")),
        ("page: dashboard 30d, one upstream", dashboard(timedelta(days=30), "day",
                                                       upstream="up-2")),
        ("page: dashboard 30d, model+upstream", dashboard(timedelta(days=30), "day",
                                                         model="model-3", upstream="up-2")),
        ("page: dashboard 30d, busiest key", dashboard(timedelta(days=30), "day", key_id=1)),
        ("page: usage explorer", explorer),
        ("page: key (busiest)", key_page),
        ("totals, all time", lambda: usage.totals(engine)),
        ("totals, 30 days", lambda: usage.totals(engine, start=d30)),
        ("totals, one key, 30 days", lambda: usage.totals(engine, key_id=1, start=d30)),
        ("top 10 keys, 30 days", lambda: usage.top_keys(engine, start=d30)),
        ("keys of one model, 30 days", lambda: usage.by_key(engine, start=d30,
                                                             model="model-3")),
        ("keys of one upstream, 30 days", lambda: usage.by_key(engine, start=d30,
                                                                upstream="up-2")),
        ("per model, 30 days", lambda: usage.by_model(engine, start=d30)),
        ("per upstream, 7 days", lambda: usage.by_upstream(engine, start=d7)),
        ("per endpoint, 30 days", lambda: usage.by_endpoint(engine, start=d30)),
        ("series by hour, 7 days", lambda: usage.timeseries(engine, start=d7, bucket="hour")),
        ("series by day, 30 days", lambda: usage.timeseries(engine, start=d30, bucket="day")),
        ("series by day, one key", lambda: usage.timeseries(engine, start=d30, key_id=3,
                                                           bucket="day")),
        ("report 30 days (CLI usage)", lambda: usage.report(engine, start=d30, bucket="day")),
        ("report 24 h by hour", lambda: usage.report(engine, start=h24, bucket="hour")),
        ("latency p50/p95, 24 h", lambda: latency_series(engine, start=h24, bucket="hour")),
        ("latency p50/p95, 30 days", lambda: latency_series(engine, start=d30, bucket="day")),
        ("latency p50/p95, busiest key 24 h", lambda: latency_series(engine, start=h24,
                                                                     key_id=1)),
        ("key-stats (busiest key)", lambda: usage.key_stats(engine, 1)),
        ("key-stats (quiet key)", lambda: usage.key_stats(engine, KEYS)),
        ("records, first page", lambda: usage.list_records(engine, limit=50)),
        ("records, page at half the table", lambda: usage.list_records(engine, cursor=deep)),
        ("records, errors, half the table", lambda: usage.list_records(engine, cursor=deep,
                                                                        status="error")),
        ("records, errors of a key", lambda: usage.list_records(engine, key_id=2,
                                                                status="error")),
        ("records, one model, 1 day", lambda: usage.list_records(engine, model="model-3",
                                                                 start=d1)),
        ("records, one upstream, half", lambda: usage.list_records(engine, cursor=deep,
                                                                    upstream="up-2")),
        ("filtered totals, all time", lambda: usage.filtered_totals(engine)),
        ("filtered totals, errors, 1 day", lambda: usage.filtered_totals(engine, start=d1,
                                                                          status="error")),
        ("filtered totals, 1 day from :mm", lambda: usage.filtered_totals(engine, start=d1)),
        ("filtered totals, 1 day whole hours", lambda: usage.filtered_totals(
            engine, start=day_ago_hour)),
        ("CSV, one key, 1 day", csv_one_key_day),
        ("raw scan: totals, 30 days", raw_scan_totals),
    ]  # fmt: skip


async def measure(url: str, repeat: int, only: str | None) -> list[dict[str, Any]]:
    from sqlalchemy import text

    engine = create_engine(url)
    async with engine.connect() as conn:
        max_id = int((await conn.execute(text("SELECT max(id) FROM usage_records"))).scalar() or 0)
    results = []
    for name, fn in cases(engine, max_id):
        if only and only not in name:
            continue
        median, worst = await timed(fn, repeat)
        results.append({"query": name, "median_ms": round(median, 1), "max_ms": round(worst, 1)})
        print(f"  {name:<40} median {median:9.1f} ms   max {worst:9.1f} ms", flush=True)
    await engine.dispose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    ap.add_argument("--db-url", help="a database URL instead (PostgreSQL: its own database)")
    ap.add_argument("--keep", action="store_true", help="keep the SQLite file afterwards")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", help="time only the views whose name holds this text")
    ap.add_argument("--measure-only", action="store_true",
                    help="neither generate nor migrate: time the database as it is")  # fmt: skip
    args = ap.parse_args()

    tmp = None
    if args.db_url:
        url = args.db_url
    else:
        if args.db is None:
            tmp = tempfile.TemporaryDirectory(prefix="tollway-usage-bench-")
            args.db = Path(tmp.name) / "usage.db"
        url = f"sqlite+aiosqlite:///{args.db}"
    postgres = url.startswith("postgresql")
    found = counts(url)
    if not args.measure_only and (found is None or found[0] != args.rows):
        if postgres:
            reset_pg(url)
        elif args.db is not None:
            args.db.unlink(missing_ok=True)
        upgrade(url, BASE_REVISION)
        print(f"generating {args.rows:,} usage rows over {args.days} days")
        t = time.perf_counter()
        if postgres:
            generate_pg(url, args.rows, args.days)
        else:
            generate_sqlite(args.db, args.rows, args.days)
        print(f"  generated in {time.perf_counter() - t:.0f} s")
    if not args.measure_only:
        took = upgrade(url, "head")
        print(f"schema at head ({took:.1f} s: the new migrations' backfills, if any)")
    raw, hourly, daily = counts(url) or (0, 0, 0)
    size = ""
    if not postgres and args.db is not None:
        size = f", {args.db.stat().st_size / 1e6:,.0f} MB"
    print(f"{raw:,} usage rows, {hourly:,} hourly + {daily:,} daily rollups{size}")
    results = asyncio.run(measure(url, args.repeat, args.only))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(__file__).parent / "results" / f"usage-queries-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"database": "postgresql" if postgres else "sqlite", "rows": raw,
                               "hourly_rollups": hourly, "daily_rollups": daily,
                               "results": results}, indent=2))  # fmt: skip
    print(f"results: {out}")
    if tmp is not None and not args.keep:
        tmp.cleanup()


if __name__ == "__main__":
    main()
