"""Usage reports (rollups) and raw records (list, CSV) on real SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.types import UsageEvent
from tollway.services import keys, usage
from tollway.services.errors import Invalid
from tollway.store.usage_writer import write_usage

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


def ev(
    minutes: float, key_id: int | None, model: str | None, upstream: str | None, **kw: object
) -> UsageEvent:
    return UsageEvent(
        ts=(T0 + timedelta(minutes=minutes)).timestamp(),
        request_id=f"r{minutes}",
        key_id=key_id,
        method="POST",
        endpoint=str(kw.get("endpoint", "/v1/chat/completions")),
        model=model,
        upstream=upstream,
        status=int(kw.get("status", 200)),  # type: ignore[call-overload]
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cost_usd=float(kw.get("cost", 0.25)),  # type: ignore[arg-type]
        latency_ms=float(kw.get("latency", 100.0)),  # type: ignore[arg-type]
    )


@pytest.fixture
async def seeded(engine: AsyncEngine) -> tuple[AsyncEngine, int, int]:
    a = (await keys.create_key(engine, {"name": "alpha"})).info.id
    b = (await keys.create_key(engine, {"name": "beta"})).info.id
    events = [
        ev(0, a, "gpt-a", "up1"),
        ev(10, a, "gpt-a", "up1", latency=300.0),
        ev(20, a, "gpt-b", "up2", status=502, cost=0.0),
        ev(60 * 3, b, "gpt-a", "up2"),  # 13:15
        ev(60 * 26, b, "emb", "up1", endpoint="/v1/embeddings", status=429),  # next day 12:15
        ev(60 * 27, None, None, None, endpoint="/v1/models", status=401, cost=0.0),
    ]
    await write_usage(engine, events)
    return engine, a, b


async def test_totals_breakdowns_and_top(seeded: tuple[AsyncEngine, int, int]) -> None:
    engine, a, b = seeded
    t = await usage.totals(engine)
    assert (t.requests, t.errors, t.total_tokens) == (6, 3, 90)
    assert t.cost_usd == pytest.approx(1.0)
    assert (await usage.totals(engine, key_id=a)).requests == 3
    assert (await usage.totals(engine, model="gpt-a", upstream="up1")).avg_latency_ms == 200.0
    # Whole hours: 10:15..11:00 covers the 10:00 bucket.
    assert (await usage.totals(engine, start=T0, end=T0 + timedelta(minutes=45))).requests == 3

    keys_ = await usage.by_key(engine)
    assert [(k.key_id, k.name, k.requests) for k in keys_] == [
        (a, "alpha", 3),
        (b, "beta", 2),
        (0, None, 1),
    ]
    assert keys_[0].prefix is not None and keys_[2].prefix is None
    assert [k.key_id for k in await usage.top_keys(engine, order="tokens", limit=1)] == [a]
    # Ties break by key id.
    assert [k.key_id for k in await usage.top_keys(engine, order="errors")] == [0, a, b]
    models = await usage.by_model(engine)
    assert [(m.name, m.requests) for m in models] == [
        ("gpt-a", 3),
        ("", 1),
        ("emb", 1),
        ("gpt-b", 1),
    ]
    assert [m.name for m in await usage.top_models(engine, limit=1)] == ["gpt-a"]
    ups = await usage.by_upstream(engine, key_id=a)
    assert [(g.name, g.requests, g.errors) for g in ups] == [("up1", 2, 0), ("up2", 1, 1)]
    eps = await usage.by_endpoint(engine, upstream="up1")
    assert [(g.name, g.requests) for g in eps] == [
        ("/v1/chat/completions", 2),
        ("/v1/embeddings", 1),
    ]
    by_cost = await usage.by_model(engine, order="cost")
    assert by_cost[0].name == "gpt-a"

    with pytest.raises(Invalid):
        await usage.by_key(engine, order="nope")
    with pytest.raises(Invalid):
        await usage.by_model(engine, limit=0)
    with pytest.raises(Invalid):
        await usage.totals(engine, start=T0, end=T0)


async def test_timeseries_hours_and_days(seeded: tuple[AsyncEngine, int, int]) -> None:
    engine, a, _ = seeded
    hours = await usage.timeseries(engine, start=T0, end=T0 + timedelta(hours=4), bucket="hour")
    assert [p.bucket.hour for p in hours] == [10, 11, 12, 13, 14]
    assert [p.requests for p in hours] == [3, 0, 0, 1, 0]
    assert hours[1].avg_latency_ms is None and hours[0].bucket.tzinfo is not None
    days = await usage.timeseries(
        engine, start=T0 - timedelta(hours=10), end=T0 + timedelta(days=2), bucket="day"
    )
    assert [(p.bucket.day, p.requests, p.errors) for p in days] == [(1, 4, 1), (2, 2, 2), (3, 0, 0)]
    only_a = await usage.timeseries(
        engine, start=T0, end=T0 + timedelta(days=2), bucket="day", key_id=a
    )
    assert sum(p.requests for p in only_a) == 3
    with pytest.raises(Invalid):
        await usage.timeseries(engine, bucket="week")
    with pytest.raises(Invalid):
        await usage.timeseries(engine, start=T0 - timedelta(days=3650), end=T0, bucket="hour")


async def test_report_adds_up(seeded: tuple[AsyncEngine, int, int]) -> None:
    engine, _, b = seeded
    rep = await usage.report(engine, start=T0, end=T0 + timedelta(days=3), bucket="day")
    assert rep.totals.requests == 6 == sum(p.requests for p in rep.series)
    assert sum(k.requests for k in rep.by_key) == 6
    assert {g.name for g in rep.by_endpoint} == {
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
    }
    narrow = await usage.report(engine, start=T0, end=T0 + timedelta(days=3), key_id=b, top=1)
    assert narrow.totals.requests == 2 and len(narrow.by_model) == 1 and narrow.key_id == b


async def test_records_pages_and_filters(seeded: tuple[AsyncEngine, int, int]) -> None:
    engine, a, _ = seeded
    page = await usage.list_records(engine, limit=4)
    assert [r.request_id for r in page.items] == ["r1620", "r1560", "r180", "r20"]
    assert page.next_cursor == page.items[-1].id
    rest = await usage.list_records(engine, limit=4, cursor=page.next_cursor)
    assert [r.request_id for r in rest.items] == ["r10", "r0"] and rest.next_cursor is None
    assert [r.status for r in (await usage.list_records(engine, status="4xx")).items] == [401, 429]
    assert len((await usage.list_records(engine, status="error")).items) == 3
    assert len((await usage.list_records(engine, status="ok")).items) == 3
    assert len((await usage.list_records(engine, status="502")).items) == 1
    got = await usage.list_records(engine, key_id=a, model="gpt-a", upstream="up1")
    assert len(got.items) == 2 and got.items[0].ts.tzinfo is not None
    # Raw filters use exact times, not whole hours.
    exact = await usage.list_records(
        engine, start=T0 + timedelta(minutes=5), end=T0 + timedelta(hours=1)
    )
    assert [r.request_id for r in exact.items] == ["r20", "r10"]
    for bad in ("abc", "600", "6xx"):
        with pytest.raises(Invalid):
            await usage.list_records(engine, status=bad)
    with pytest.raises(Invalid):
        await usage.list_records(engine, limit=5000)


async def test_csv_export_streams_every_row(seeded: tuple[AsyncEngine, int, int]) -> None:
    engine, a, _ = seeded
    chunks = [c async for c in await usage.export_csv(engine, batch=2)]
    assert len(chunks) == 1 + 3  # header, then 3 batches of 2
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert [r["request_id"] for r in rows] == ["r0", "r10", "r20", "r180", "r1560", "r1620"]
    assert tuple(rows[0]) == usage.CSV_FIELDS and rows[0]["key_name"] == "alpha"
    assert (
        rows[0]["ts"] == T0.isoformat() and rows[5]["key_id"] == "" and rows[0]["stream"] == "False"
    )
    only = [c async for c in await usage.export_csv(engine, key_id=a, status="5xx")]
    assert len(list(csv.DictReader(io.StringIO("".join(only))))) == 1
    with pytest.raises(Invalid):
        await usage.export_csv(engine, status="bad")


async def test_daily_rollups_agree_with_hourly(seeded: tuple[AsyncEngine, int, int]) -> None:
    from sqlalchemy import func, select

    from tollway.services.usage_models import rollup_source, sums
    from tollway.store.tables import usage_rollups_daily

    engine, _, _ = seeded
    async with engine.connect() as conn:
        days = (
            await conn.execute(
                select(usage_rollups_daily.c.day, func.sum(usage_rollups_daily.c.requests))
                .group_by(usage_rollups_daily.c.day)
                .order_by(usage_rollups_daily.c.day)
            )
        ).all()
        assert [(as_day(r[0]), int(r[1])) for r in days] == [(1, 4), (2, 2)]
        ranges = [
            (None, None),
            (T0 - timedelta(days=1), T0 + timedelta(days=2)),
            (T0 + timedelta(minutes=30), T0 + timedelta(hours=26, minutes=5)),
            (T0.replace(hour=0, minute=0), T0.replace(hour=0, minute=0) + timedelta(days=1)),
            (T0 + timedelta(hours=3), None),
            (None, T0 + timedelta(hours=20)),
        ]
        for start, end in ranges:
            for f in ({}, {"model": "gpt-a"}, {"upstream": "up1", "key_id": 1}):
                mixed = rollup_source(start=start, end=end, **f)  # type: ignore[arg-type]
                hourly = rollup_source(start=start, end=end, hourly_only=True, **f)  # type: ignore[arg-type]
                a = (await conn.execute(select(*sums(mixed.c)))).one()
                b = (await conn.execute(select(*sums(hourly.c)))).one()
                assert tuple(a) == pytest.approx(tuple(b)), (start, end, f)


async def test_migration_backfills_daily_rollups(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import func, select
    from sqlalchemy.engine import Connection

    from tollway.store.db import alembic_config, create_engine, migrate
    from tollway.store.tables import usage_rollups, usage_rollups_daily

    engine = create_engine(db_url)
    try:

        def to_0001(connection: Connection) -> None:
            cfg = alembic_config(db_url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0001")

        async with engine.begin() as conn:
            await conn.run_sync(to_0001)
            rows = [
                {"hour": T0.replace(minute=0) + timedelta(hours=h), "key_id": 1, "model": "m",
                 "upstream": "u", "endpoint": "/v1/x", "requests": 2, "errors": h % 2,
                 "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost_usd": 0.5,
                 "latency_ms_sum": 10.0}
                for h in range(30)  # 10:00 on day 1 to 15:00 on day 2
            ]  # fmt: skip
            await conn.execute(usage_rollups.insert(), rows)
        await migrate(engine)
        async with engine.connect() as conn:
            got = (
                await conn.execute(
                    select(usage_rollups_daily.c.day, func.sum(usage_rollups_daily.c.requests))
                    .group_by(usage_rollups_daily.c.day)
                    .order_by(usage_rollups_daily.c.day)
                )
            ).all()
        assert [(as_day(r[0]), int(r[1])) for r in got] == [(1, 28), (2, 32)]
        assert (await usage.totals(engine, start=T0 - timedelta(days=1))).requests == 60
    finally:
        await engine.dispose()


def as_day(value: object) -> int:
    return value.day if isinstance(value, datetime) else int(str(value)[8:10])


async def test_csv_writes_an_unknown_cost_as_a_dash(engine: AsyncEngine) -> None:
    """A request without a price has no cost: "—" in the CSV, never 0 or a blank."""
    unpriced = UsageEvent(T0.timestamp(), "r-unpriced", None, "POST", "/v1/chat/completions")
    priced = UsageEvent(T0.timestamp() + 1, "r-priced", None, "POST", "/v1/chat/completions")
    priced.cost_usd = 0.0000002
    await write_usage(engine, [unpriced, priced])
    rows = list(
        csv.DictReader(io.StringIO("".join([c async for c in await usage.export_csv(engine)])))
    )
    assert [(r["request_id"], r["cost_usd"]) for r in rows] == [
        ("r-unpriced", "—"),
        ("r-priced", "0.0000002"),
    ]
