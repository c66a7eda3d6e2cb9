"""Dashboard: requests, tokens, cost and error rates over time (hour or day buckets), latency
p50/p95, top keys and models, upstream health and balance; narrowed by key, model and
upstream, and compared with the period before. Charts are drawn in the browser by uPlot from a
JSON block in the page (no extra request, nothing inline to execute)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollway.services import keys as key_service
from tollway.services import upstreams as upstream_service
from tollway.services import usage as usage_service
from tollway.services.keys import KeyName
from tollway.services.usage_latency import LatencySeries, latency_series
from tollway.ui.web import admin, ui_of, utcnow

# name -> (label, length, default bucket)
RANGES: dict[str, tuple[str, timedelta, str]] = {
    "24h": ("Last 24 hours", timedelta(hours=24), "hour"),
    "7d": ("Last 7 days", timedelta(days=7), "hour"),
    "30d": ("Last 30 days", timedelta(days=30), "day"),
    "90d": ("Last 90 days", timedelta(days=90), "day"),
}
FILTER_KEYS = 500  # keys offered in the filter (by name); more are reachable by ?key_id=


def _rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def chart_data(
    report: usage_service.UsageReport,
    latency: Any,
    previous: usage_service.UsageReport,
    shift: timedelta,
) -> dict[str, Any]:
    """Columns for uPlot: x = bucket start (unix seconds), then one list per series, all on
    that one x (latency and the previous period are matched to it by bucket time)."""
    series = report.series
    x = [int(p.bucket.timestamp()) for p in series]
    by_time = {int(pt.bucket.timestamp()): pt for pt in latency.points}
    lat = [by_time.get(t) for t in x]
    before = {int((p.bucket + shift).timestamp()): p.requests for p in previous.series}
    return {
        "bucket": report.bucket,
        "x": x,
        "requests": [p.requests for p in series],
        "previous_requests": [before.get(t) for t in x],
        "client_errors": [p.client_errors for p in series],
        "upstream_errors": [p.errors - p.client_errors for p in series],
        "tokens": [p.total_tokens for p in series],
        "prompt_tokens": [p.prompt_tokens for p in series],
        "completion_tokens": [p.completion_tokens for p in series],
        "cost": [round(p.cost_usd, 6) for p in series],
        "client_error_rate": [_rate(p.client_errors, p.requests) for p in series],
        "upstream_error_rate": [_rate(p.errors - p.client_errors, p.requests) for p in series],
        "p50": [pt.p50_ms if pt is not None else None for pt in lat],
        "p95": [pt.p95_ms if pt is not None else None for pt in lat],
    }


def change(now: float | None, before: float | None) -> str:
    """ "+12%" / "-5%" / "new" / "" against the previous period."""
    if now is None or before is None:
        return ""
    if before == 0:
        return "" if now == 0 else "new"
    pct = 100.0 * (now - before) / before
    if abs(pct) < 0.5:
        return "±0%"
    return f"{'+' if pct > 0 else '-'}{abs(pct):.0f}%"


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    key = q.get("key_id", "")
    return {
        "key_id": int(key) if key.isdigit() and 0 < int(key) < 2**31 else None,
        "model": q.get("model") or None,
        "upstream": q.get("upstream") or None,
    }


async def page_reads(
    engine: AsyncEngine, start: datetime, end: datetime, bucket: str, f: dict[str, Any]
) -> tuple[usage_service.UsageReport, usage_service.UsageReport, LatencySeries, list[KeyName]]:
    """The page's four reads, at once, each on its own pooled connection: the database's
    work for one overlaps the Python work for the others (bench/usage_queries.py times
    this). The period before needs its totals and series only."""
    length = end - start
    return await asyncio.gather(
        usage_service.report(engine, start=start, end=end, bucket=bucket, top=10, **f),
        usage_service.report(
            engine, start=start - length, end=start, bucket=bucket, breakdowns=False, **f
        ),
        latency_series(engine, start=start, end=end, bucket=bucket, **f),
        key_service.key_names(engine, limit=FILTER_KEYS),
    )


@admin
async def dashboard(request: Request) -> Response:
    ui = ui_of(request)
    engine = ui.runtime.engine
    range_name = request.query_params.get("range", "24h")
    if range_name not in RANGES:
        range_name = "24h"
    label, length, bucket = RANGES[range_name]
    if request.query_params.get("bucket") in ("hour", "day"):
        bucket = request.query_params["bucket"]
    f = _filters(request)
    end = utcnow()
    start = end - length
    report, previous, latency, keys = await page_reads(engine, start, end, bucket, f)
    data = chart_data(report, latency, previous, length)
    t, p = report.totals, previous.totals
    pool = ui.runtime.pool
    return ui.render(
        request,
        "dashboard.html",
        title="Dashboard",
        ranges=RANGES,
        range_name=range_name,
        range_label=label,
        bucket=bucket,
        report=report,
        previous=previous,
        latency=latency,
        f=f,
        key_choices=sorted(keys, key=lambda k: k.name.lower()),
        model_choices=sorted(set(pool.models()) | {m.name for m in report.by_model if m.name}),
        upstream_choices=sorted(pool.by_name),
        client_rate=t.client_errors / t.requests if t.requests else None,
        upstream_rate=(t.errors - t.client_errors) / t.requests if t.requests else None,
        changes={
            "requests": change(t.requests, p.requests),
            "tokens": change(t.total_tokens, p.total_tokens),
            "cost": change(t.cost_usd, p.cost_usd),
            "client_errors": change(t.client_errors, p.client_errors),
            "upstream_errors": change(t.errors - t.client_errors, p.errors - p.client_errors),
        },
        chart_json=json.dumps(data).replace("<", "\\u003c"),
        upstreams=await upstream_service.upstream_status(pool),
    )


routes = [Route("/dashboard", dashboard, methods=["GET"])]
