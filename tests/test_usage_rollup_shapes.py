"""The narrower rollups and latency histograms answer exactly what the raw rows say.

Generated traffic (seeded: keys, models, upstreams, endpoints, errors of both kinds, rows
without a model, upstream or latency, replayed events) goes through the real usage writer on
SQLite and PostgreSQL; every report, with every filter the views offer, is compared with the
same sums computed from the raw table. The migration that adds the tables is run again over
the same data (downgrade, upgrade) and must rebuild them row for row.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import column, select, table
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.types import UsageEvent
from tollway.services import keys, usage
from tollway.services.usage_latency import latency_series, percentile
from tollway.store.db import alembic_config
from tollway.store.queries import as_utc
from tollway.store.rollup_shapes import latency_bucket
from tollway.store.tables import (
    usage_cube,
    usage_cube_daily,
    usage_latency,
    usage_latency_daily,
    usage_records,
)
from tollway.store.usage_writer import is_client_error, write_usage

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
OLD_LATENCY_COLUMNS = ("hour", "dims", "model", "upstream", "ms_bucket", "requests")  # 0010
MODELS = ["m-a", "m-b", "m-c", None]
UPSTREAMS = ["up-1", "up-2", "up-3", None]
ENDPOINTS = ["/v1/chat/completions", "/v1/embeddings"]


def _events(key_ids: list[int | None], n: int = 700) -> list[UsageEvent]:
    rnd = random.Random(11)
    out = []
    for i in range(n):
        status = rnd.choice([200] * 12 + [429, 400, 500, 502])
        out.append(
            UsageEvent(
                ts=(T0 + timedelta(minutes=rnd.uniform(0, 3 * 24 * 60))).timestamp(),
                request_id=f"g{i}",
                key_id=rnd.choice(key_ids),
                method="POST",
                endpoint=rnd.choice(ENDPOINTS),
                model=rnd.choice(MODELS),
                upstream=rnd.choice(UPSTREAMS),
                status=status,
                error_type=rnd.choice([None, "upstream_error"]) if status >= 400 else None,
                prompt_tokens=rnd.randint(1, 900),
                completion_tokens=rnd.randint(0, 300),
                total_tokens=rnd.randint(1, 1200),
                cost_usd=rnd.choice([None, rnd.uniform(0, 0.01)]),
                latency_ms=rnd.choice([None, rnd.uniform(5, 4000), rnd.uniform(0, 2)]),
            )
        )
    return out


@pytest.fixture
async def traffic(engine: AsyncEngine) -> tuple[AsyncEngine, list[int]]:
    ids = [(await keys.create_key(engine, {"name": f"k{i}"})).info.id for i in range(5)]
    events = _events([*ids, None])
    for start in range(0, len(events), 97):  # batches of the writer's size class
        await write_usage(engine, events[start : start + 97])
    await write_usage(engine, events[100:300])  # a replay: counted nowhere a second time
    return engine, ids


async def _raw(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(usage_records))).all())


def _in(row: Any, start: datetime | None, end: datetime | None, f: dict[str, Any]) -> bool:
    """A raw row in a rollup range and filters ("" = none): every hour bucket that starts at
    or after start's hour and before end (so a partial last hour counts whole)."""
    ts = as_utc(row.ts)
    lo = start.replace(minute=0, second=0, microsecond=0) if start else None
    hi = end
    if end is not None and end != end.replace(minute=0, second=0, microsecond=0):
        hi = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if (lo and ts < lo) or (hi and ts >= hi):
        return False
    dims = {
        "key_id": row.key_id or 0,
        "model": row.model or "",
        "upstream": row.upstream or "",
        "endpoint": row.endpoint,
    }
    return all(v is None or dims[k] == v for k, v in f.items())


def _exact(row: Any, start: datetime | None, end: datetime | None) -> bool:
    ts = as_utc(row.ts)
    return (start is None or ts >= start) and (end is None or ts < end)


def _sums(rows: Iterable[Any]) -> dict[str, Any]:
    rows = list(rows)
    n = len(rows)
    lat = sum(r.latency_ms or 0.0 for r in rows)
    return {
        "requests": n,
        "errors": sum(r.status >= 400 for r in rows),
        "client_errors": sum(is_client_error(r.status, r.error_type) for r in rows),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in rows),
        "completion_tokens": sum(r.completion_tokens or 0 for r in rows),
        "total_tokens": sum(r.total_tokens or 0 for r in rows),
        "cost_usd": pytest.approx(sum(r.cost_usd or 0.0 for r in rows), abs=1e-9),
        "avg_latency_ms": pytest.approx(lat / n) if n else None,
    }


def _stats(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in _sums([])}


def _grouped(rows: list[Any], dim: str) -> dict[Any, dict[str, Any]]:
    out: dict[Any, list[Any]] = {}
    for r in rows:
        value = getattr(r, dim)
        out.setdefault(value if value is not None else (0 if dim == "key_id" else ""), []).append(r)
    return {k: _sums(v) for k, v in out.items()}


FILTERS: list[dict[str, Any]] = [
    {},
    {"model": "m-b"},
    {"upstream": "up-2"},
    {"model": "m-a", "upstream": "up-1"},
    {"model": ""},  # requests without a model
    {"key_id": "K"},
    {"key_id": "K", "model": "m-c"},
    {"key_id": "K", "upstream": "up-3"},
]
RANGES = [
    (None, None),
    (T0 + timedelta(hours=5, minutes=20), T0 + timedelta(days=2, hours=7)),  # partial days
    (T0 + timedelta(days=1), T0 + timedelta(days=2)),  # one whole day
    (T0 + timedelta(hours=30), T0 + timedelta(hours=33)),  # inside one day
    # Mostly-whole edge days: the day's row less the hours outside (and groups that had
    # requests only in those hours must not show up with zero).
    (T0 + timedelta(hours=2), T0 + timedelta(days=2, hours=21, minutes=30)),
    (T0 + timedelta(days=1, hours=1), T0 + timedelta(days=1, hours=22, minutes=10)),
]


def _filters(f: dict[str, Any], ids: list[int]) -> dict[str, Any]:
    return {k: (ids[1] if v == "K" else v) for k, v in f.items()}


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: "+".join(f) or "none")
async def test_reports_equal_raw_sums(traffic: tuple[AsyncEngine, list[int]], f: dict) -> None:
    engine, ids = traffic
    f = _filters(f, ids)
    raw = await _raw(engine)
    assert len(raw) == 700
    for start, end in RANGES:
        rows = [r for r in raw if _in(r, start, end, f)]
        span = {"start": start, "end": end}
        assert _stats(await usage.totals(engine, **span, **f)) == _sums(rows)
        for dim, fn in (
            ("model", usage.by_model),
            ("upstream", usage.by_upstream),
            ("endpoint", usage.by_endpoint),
            ("key_id", usage.by_key),
        ):
            allowed = {k: v for k, v in f.items() if k != dim}
            if dim == "key_id" and "key_id" in f:
                continue  # by_key takes no key filter
            got = await fn(engine, **span, **allowed)  # type: ignore[operator]
            want = _grouped([r for r in raw if _in(r, start, end, allowed)], dim)
            names = [g.key_id if dim == "key_id" else g.name for g in got]
            assert {n: _stats(g) for n, g in zip(names, got, strict=True)} == want
            # Largest first, ties by name.
            assert names == sorted(want, key=lambda n: (-want[n]["requests"], n))
        if start is None:
            continue
        end_ = end or datetime.now(UTC)
        for bucket in ("hour", "day"):
            series = await usage.timeseries(engine, start=start, end=end_, bucket=bucket, **f)
            for p in series:
                step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
                lo = max(p.bucket, start.replace(minute=0))
                inside = [r for r in rows if lo <= as_utc(r.ts) < p.bucket + step]
                assert _stats(p) == _sums(inside), (bucket, p.bucket)
            rep = await usage.report(engine, start=start, end=end_, bucket=bucket, top=3, **f)
            assert _stats(rep.totals) == _sums(rows)
            assert [_stats(p) for p in rep.series] == [_stats(p) for p in series]
            bare = await usage.report(  # the dashboard's previous period: no breakdowns
                engine, start=start, end=end_, bucket=bucket, breakdowns=False, **f
            )
            assert bare.totals == rep.totals and bare.series == rep.series
            assert bare.by_key == bare.by_model == bare.by_upstream == bare.by_endpoint == []
            for dim, got_groups in (
                ("model", rep.by_model),
                ("upstream", rep.by_upstream),
                ("endpoint", rep.by_endpoint),
                ("key_id", rep.by_key),
            ):
                want = _grouped(rows, dim)
                top = sorted(want, key=lambda n: (-want[n]["requests"], n))[:3]
                names = [g.key_id if dim == "key_id" else g.name for g in got_groups]
                assert names == top, dim
                assert [_stats(g) for g in got_groups] == [want[n] for n in top]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: "+".join(f) or "none")
async def test_latency_percentiles_fall_in_the_raw_percentiles_bucket(
    traffic: tuple[AsyncEngine, list[int]], f: dict
) -> None:
    engine, ids = traffic
    f = _filters(f, ids)
    raw = await _raw(engine)
    start, end = T0 + timedelta(hours=5, minutes=20), T0 + timedelta(days=2, hours=7)
    for bucket in ("hour", "day"):
        got = await latency_series(engine, start=start, end=end, bucket=bucket, **f)
        rows = [r for r in raw if r.latency_ms is not None and _in(r, start, end, f)]
        from_raw = "key_id" in f and len(f) > 1  # no histogram: exact from the exact start
        if from_raw:
            rows = [r for r in rows if as_utc(r.ts) >= start]
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        for p in got.points:
            values = sorted(
                r.latency_ms for r in rows if p.bucket <= as_utc(r.ts) < p.bucket + step
            )
            assert p.count == len(values)
            for q, value in ((50, p.p50_ms), (95, p.p95_ms)):
                exact = percentile(values, q)
                if exact is None or from_raw:
                    assert value == exact
                else:
                    assert value is not None and latency_bucket(value) == latency_bucket(exact)
                    assert math.isclose(value, exact, rel_tol=0.045) or exact < 1.1
        everything = sorted(r.latency_ms for r in rows)
        assert got.overall_p95_ms is not None
        assert latency_bucket(got.overall_p95_ms) == latency_bucket(percentile(everything, 95))


async def _snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with engine.connect() as conn:
        for table in (usage_cube, usage_cube_daily, usage_latency, usage_latency_daily):
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted(
                tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows
            )
    return out


async def test_migration_rebuilds_what_the_writer_kept(
    traffic: tuple[AsyncEngine, list[int]],
) -> None:
    from alembic import command

    engine, _ = traffic
    kept = await _snapshot(engine)
    assert all(kept.values())
    url = engine.url.render_as_string(hide_password=False)

    def run(connection: Any, revision: str, down: bool) -> None:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run, "0010_usage_cube", True)
    async with engine.connect() as conn:  # 0010's histograms: its shapes, without a key column
        c = usage_latency.c
        old = table("usage_latency", *(column(n, c[n].type) for n in OLD_LATENCY_COLUMNS))
        older = (await conn.execute(select(old))).all()
    assert sorted((as_utc(r[0]), *r[1:]) for r in older) == [
        (as_utc(hour), dims, model, upstream, b, n)
        for hour, dims, key_id, model, upstream, b, n in kept["usage_latency"]
        if dims in (0, 2, 4)
    ]
    async with engine.begin() as conn:
        await conn.run_sync(run, "0009_response_cache", True)
    async with engine.begin() as conn:
        await conn.run_sync(run, "head", False)
    assert await _snapshot(engine) == kept


@pytest.mark.parametrize(
    "f", [f for f in FILTERS if f.get("model") != ""], ids=lambda f: "+".join(f) or "none"
)
async def test_filtered_totals_are_exact_to_the_minute(
    traffic: tuple[AsyncEngine, list[int]], f: dict
) -> None:
    """The explorer's totals: rollups for the whole hours, raw rows for the minutes around."""
    engine, ids = traffic
    f = _filters(f, ids)
    raw = await _raw(engine)
    ranges = [
        *RANGES,
        (T0 + timedelta(hours=5, minutes=20), None),
        (None, T0 + timedelta(days=1, minutes=59)),
        (T0 + timedelta(hours=7, minutes=1), T0 + timedelta(hours=7, minutes=50)),
    ]
    for start, end in ranges:
        rows = [r for r in raw if _exact(r, start, end) and _in(r, None, None, f)]
        got = await usage.filtered_totals(engine, start=start, end=end, **f)
        assert _stats(got) == _sums(rows), (start, end)
        for status, keep in (
            ("error", lambda code: code >= 400),
            ("ok", lambda code: code < 400),  # all the requests less the failed ones
            ("5xx", lambda code: 500 <= code < 600),
            ("2xx", lambda code: 200 <= code < 300),
            ("429", lambda code: code == 429),
            ("200", lambda code: code == 200),
        ):
            got = await usage.filtered_totals(engine, start=start, end=end, status=status, **f)
            assert _stats(got) == _sums([r for r in rows if keep(r.status)]), (status, start)


async def test_key_stats_equal_raw_sums(traffic: tuple[AsyncEngine, list[int]]) -> None:
    engine, ids = traffic
    raw = await _raw(engine)
    for start, end in RANGES:
        f = {"key_id": ids[2]}
        rows = [r for r in raw if _in(r, start, end, f)]
        s = await usage.key_stats(engine, ids[2], start=start, end=end)
        want = _sums(rows)
        assert s.totals.model_dump() == {k: v for k, v in want.items() if k != "avg_latency_ms"}
        for dim, groups in (("endpoint", s.by_endpoint), ("model", s.by_model)):
            assert {g.name: _stats(g) for g in groups} == _grouped(rows, dim)


async def test_groups_only_in_subtracted_hours_do_not_show(engine: AsyncEngine) -> None:
    """A range from 01:00 reads that day's row less its 00:00 hour: a key or model seen only
    in that hour nets to zero and must not be listed."""
    early = (await keys.create_key(engine, {"name": "early"})).info.id
    later = (await keys.create_key(engine, {"name": "later"})).info.id
    day = T0 + timedelta(days=1)
    events = [
        UsageEvent(
            ts=(day + timedelta(minutes=30)).timestamp(), request_id="early", key_id=early,
            method="POST", endpoint="/v1/early", model="m-early", upstream="up-early",
            status=200, latency_ms=10.0,
        ),
        UsageEvent(
            ts=(day + timedelta(hours=5)).timestamp(), request_id="later", key_id=later,
            method="POST", endpoint="/v1/chat/completions", model="m-a", upstream="up-1",
            status=200, latency_ms=20.0,
        ),
    ]  # fmt: skip
    await write_usage(engine, events)
    span = {"start": day + timedelta(hours=1), "end": day + timedelta(days=1, hours=20)}
    assert [k.key_id for k in await usage.by_key(engine, **span)] == [later]
    assert [g.name for g in await usage.by_model(engine, **span)] == ["m-a"]
    assert [g.name for g in await usage.by_upstream(engine, **span)] == ["up-1"]
    assert [g.name for g in await usage.by_endpoint(engine, **span)] == ["/v1/chat/completions"]
    rep = await usage.report(engine, bucket="day", **span)
    assert [k.key_id for k in rep.by_key] == [later] and rep.totals.requests == 1
    assert [g.name for g in rep.by_model] == ["m-a"]
    assert [g.name for g in rep.by_endpoint] == ["/v1/chat/completions"]
    stats = await usage.key_stats(engine, early, **span)
    assert stats.totals.requests == 0 and stats.by_model == [] and stats.by_endpoint == []
    lat = await latency_series(engine, bucket="day", **span)
    assert sum(p.count for p in lat.points) == 1 and lat.overall_p50_ms == pytest.approx(
        20, rel=0.05
    )
