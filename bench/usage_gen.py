"""Usage rows for bench/usage_queries.py: N rows over D days with Tollway's schema, then the
hourly and daily rollups, then the migrations after 0009 (which build the narrower rollups and
latency histograms from them, as on an upgraded installation).

Same shape on both databases: 300 keys with skewed traffic (key k gets 1/k^0.8 of it), 3
models each out of 20, 6 upstreams, 3 endpoints, 3 % errors (429/500/502), latency 80-3000 ms,
timestamps evenly spread and ids in time order, as a gateway writes them.
- SQLite: plain sqlite3 in big transactions (the usage writer's batching would take an hour).
- PostgreSQL: one INSERT ... SELECT FROM generate_series per 5 M rows, pseudo-random columns
  computed by the server; the indexes are dropped first and built once at the end.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tollway.store.db import alembic_config, create_engine

KEYS = 300
MODELS = [f"model-{i}" for i in range(20)]
UPSTREAMS = [f"up-{i}" for i in range(6)]
ENDPOINTS = ["/v1/chat/completions"] * 8 + ["/v1/embeddings", "/v1/responses"]
FMT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite
BASE_REVISION = "0009_response_cache"  # generated at this revision, then migrated to head
COUNTERS = (
    "requests, errors, client_errors, prompt_tokens, completion_tokens, total_tokens,"
    " cost_usd, latency_ms_sum"
)
# The usage writer's client_errors: a 4xx that is not an upstream's answer.
CLIENT_ERROR = "(status >= 400 AND status < 500 AND error_type IS DISTINCT FROM 'upstream_error')"


def time_span(days: int) -> tuple[datetime, float]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    return start, (end - start).total_seconds()


def key_models(rnd: random.Random) -> dict[int, list[str]]:
    return {k: rnd.sample(MODELS, 3) for k in range(1, KEYS + 1)}


def key_weights() -> list[float]:
    return [1 / (k + 1) ** 0.8 for k in range(KEYS)]


async def _upgrade(url: str, revision: str) -> None:
    from alembic import command

    engine = create_engine(url, pool_size=1, max_overflow=0)

    def run(connection: Any) -> None:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


def upgrade(url: str, revision: str) -> float:
    t = time.perf_counter()
    asyncio.run(_upgrade(url, revision))
    return time.perf_counter() - t


# --- SQLite -----------------------------------------------------------------------------------


def generate_sqlite(path: Path, rows: int, days: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    start, span = time_span(days)
    weights = key_weights()
    models = key_models(rnd)
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
                    rnd.choice(models[key]), rnd.choice(UPSTREAMS), status,
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
    _rollups(con.execute, "substr(ts, 1, 13) || ':00:00.000000'", "substr(hour, 1, 10)"
             " || ' 00:00:00.000000'")  # fmt: skip
    con.commit()
    con.execute("ANALYZE")
    con.close()
    print(f"  hourly and daily rollups built in {time.perf_counter() - t1:.0f} s")


def _rollups(execute: Any, hour: str, day: str) -> None:
    """One GROUP BY per rollup table: the sums the usage writer keeps current per batch."""
    execute(
        "INSERT INTO usage_rollups (hour, key_id, model, upstream, endpoint, "
        f"{COUNTERS}) SELECT {hour}, coalesce(key_id, 0), coalesce(model, ''),"
        " coalesce(upstream, ''), endpoint, count(*), sum(CASE WHEN status >= 400 THEN 1"
        f" ELSE 0 END), sum(CASE WHEN {CLIENT_ERROR} THEN 1 ELSE 0 END),"
        " sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)),"
        " sum(coalesce(total_tokens, 0)), sum(coalesce(cost_usd, 0)),"
        " sum(coalesce(latency_ms, 0)) FROM usage_records GROUP BY 1, 2, 3, 4, 5"
    )
    execute(
        f"INSERT INTO usage_rollups_daily (day, key_id, model, upstream, endpoint, {COUNTERS})"
        f" SELECT {day}, key_id, model, upstream, endpoint, sum(requests), sum(errors),"
        " sum(client_errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),"
        " sum(cost_usd), sum(latency_ms_sum) FROM usage_rollups GROUP BY 1, 2, 3, 4, 5"
    )


# --- PostgreSQL -------------------------------------------------------------------------------

PG_CHUNK = 5_000_000
SLOTS = 10_000  # key slots: key k holds a share of them proportional to its weight

# One chunk of rows, every column computed by the server in generate_series order (ids follow
# time). The inner select draws the random numbers once per row; keys come from the slot array
# (skew), models from the key's three; the arrays are parameters, so no join and no sort.
PG_INSERT = """
INSERT INTO usage_records (ts, request_id, key_id, method, endpoint, model, upstream, status,
  stream, prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms, attempts)
SELECT ts, 'req' || lpad(g::text, 10, '0'), key_id, 'POST', endpoint,
  (CAST(:models AS text[]))[(key_id - 1) * 3 + mi + 1], upstream, status, false, p, c, p + c,
  (p * 2.5 + c * 10) / 1e6, lat, 1
FROM (
  SELECT g, ts, key_id, mi, upstream, endpoint, status, p, lat,
    CASE WHEN status = 200 THEN floor(rc * 801)::int ELSE 0 END AS c
  FROM (
    SELECT g,
      CAST(:start AS timestamptz) + make_interval(secs => :span * g / :rows) AS ts,
      (CAST(:slots AS int[]))[1 + floor(random() * :nslots)::int] AS key_id,
      floor(random() * 3)::int AS mi,
      'up-' || floor(random() * 6)::int AS upstream,
      (CAST(:endpoints AS text[]))[1 + floor(random() * 10)::int] AS endpoint,
      CASE WHEN random() > 0.03 THEN 200
           ELSE (ARRAY[429, 500, 502])[1 + floor(random() * 3)::int] END AS status,
      10 + floor(random() * 1991)::int AS p,
      random() AS rc,
      80 + random() * 2920 AS lat
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
  ) AS r
) AS x
"""


def _slots() -> list[int]:
    """SLOTS key ids, key k repeated in proportion to its weight: a uniform pick is skewed."""
    weights = key_weights()
    total = sum(weights)
    out: list[int] = []
    acc = 0.0
    for k, w in enumerate(weights, start=1):
        acc += w
        out.extend([k] * (round(SLOTS * acc / total) - len(out)))
    return out


async def _generate_pg(url: str, rows: int, days: int, seed: int) -> None:
    rnd = random.Random(seed)
    start, span = time_span(days)
    models = key_models(rnd)
    slots = _slots()
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"SELECT setseed({(seed % 100) / 100})")
            now = datetime.now(UTC)
            await conn.execute(
                text(
                    "INSERT INTO api_keys (id, key_hash, prefix, name, enabled, created_at,"
                    " updated_at, budget_period, response_cache) VALUES (:id, :h, :p, :n, true,"
                    " :now, :now, 'none', false)"
                ),
                [
                    {"id": k, "h": f"{k:064x}", "p": f"tw-{k:07d}", "n": f"key {k}", "now": now}
                    for k in range(1, KEYS + 1)
                ],
            )
            await conn.exec_driver_sql(f"SELECT setval('api_keys_id_seq', {KEYS})")
            # Indexes are built once at the end: far cheaper than keeping them per row.
            found = await conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_records'"
                " AND indexname <> 'pk_usage_records'"
            )
            indexes = list(found.all())
            for name, _ in indexes:
                await conn.exec_driver_sql(f'DROP INDEX "{name}"')
        t0 = time.perf_counter()
        for lo in range(0, rows, PG_CHUNK):
            hi = min(lo + PG_CHUNK, rows) - 1
            async with engine.begin() as conn:
                await _pg_session(conn)
                await conn.execute(
                    text(PG_INSERT),
                    {
                        "start": start, "span": span, "rows": rows, "lo": lo, "hi": hi,
                        "slots": slots, "nslots": len(slots), "endpoints": ENDPOINTS,
                        "models": [m for k in range(1, KEYS + 1) for m in models[k]],
                    },
                )  # fmt: skip
            print(f"\r  {hi + 1:,} rows ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
        print()
        t1 = time.perf_counter()
        async with engine.begin() as conn:
            await _pg_session(conn)
            for _, definition in indexes:
                await conn.exec_driver_sql(definition)
        print(f"  raw-row indexes built in {time.perf_counter() - t1:.0f} s")
        t2 = time.perf_counter()
        async with engine.begin() as conn:
            await _pg_session(conn)
            statements: list[str] = []
            _rollups(
                statements.append,
                "date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
                "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
            )
            for sql in statements:
                await conn.exec_driver_sql(sql)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")
        print(
            f"  hourly and daily rollups built, VACUUM ANALYZE in {time.perf_counter() - t2:.0f} s"
        )
    finally:
        await engine.dispose()


async def _pg_session(conn: AsyncConnection) -> None:
    # Generation only: big sorts and hash tables in memory, index builds with more room.
    await conn.exec_driver_sql("SET LOCAL work_mem = '512MB'")
    await conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
    await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    # No per-row foreign-key trigger (key ids 1..KEYS exist): it cost more than the row itself.
    await conn.exec_driver_sql("SET LOCAL session_replication_role = replica")


def generate_pg(url: str, rows: int, days: int, seed: int = 7) -> None:
    asyncio.run(_generate_pg(url, rows, days, seed))


async def _reset_pg(url: str) -> None:
    """Drop every table of the database (the bench's own) so a new row count starts clean."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            found = await conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            names = [f'"{name}"' for name in found.scalars()]
            if names:
                await conn.exec_driver_sql(f"DROP TABLE {', '.join(names)} CASCADE")
    finally:
        await engine.dispose()


def reset_pg(url: str) -> None:
    asyncio.run(_reset_pg(url))
