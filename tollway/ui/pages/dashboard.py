"""Dashboard: requests, tokens, cost and error rate over time (hour or day buckets), latency
p50/p95, top keys and models, upstream health and balance. Charts are drawn in the browser by
uPlot from a JSON block in the page (no extra request, nothing inline to execute)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollway.services import upstreams as upstream_service
from tollway.services import usage as usage_service
from tollway.services.usage_latency import latency_series
from tollway.ui.web import admin, ui_of, utcnow

# name -> (label, length, default bucket)
RANGES: dict[str, tuple[str, timedelta, str]] = {
    "24h": ("Last 24 hours", timedelta(hours=24), "hour"),
    "7d": ("Last 7 days", timedelta(days=7), "hour"),
    "30d": ("Last 30 days", timedelta(days=30), "day"),
    "90d": ("Last 90 days", timedelta(days=90), "day"),
}


def chart_data(report: usage_service.UsageReport, latency: Any) -> dict[str, Any]:
    """Columns for uPlot: x = bucket start (unix seconds), then one list per series."""
    series = report.series
    return {
        "bucket": report.bucket,
        "x": [int(p.bucket.timestamp()) for p in series],
        "requests": [p.requests for p in series],
        "errors": [p.errors for p in series],
        "tokens": [p.total_tokens for p in series],
        "prompt_tokens": [p.prompt_tokens for p in series],
        "completion_tokens": [p.completion_tokens for p in series],
        "cost": [round(p.cost_usd, 6) for p in series],
        "error_rate": [
            round(100.0 * p.errors / p.requests, 2) if p.requests else None for p in series
        ],
        "p50": [pt.p50_ms for pt in latency.points],
        "p95": [pt.p95_ms for pt in latency.points],
    }


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
    end = utcnow()
    start = end - length
    report = await usage_service.report(engine, start=start, end=end, bucket=bucket, top=10)
    latency = await latency_series(engine, start=start, end=end, bucket=bucket)
    data = chart_data(report, latency)
    return ui.render(
        request,
        "dashboard.html",
        title="Dashboard",
        ranges=RANGES,
        range_name=range_name,
        range_label=label,
        bucket=bucket,
        report=report,
        latency=latency,
        error_rate=report.totals.errors / report.totals.requests
        if report.totals.requests
        else None,
        chart_json=json.dumps(data).replace("<", "\\u003c"),
        upstreams=await upstream_service.upstream_status(ui.runtime.pool),
    )


routes = [Route("/dashboard", dashboard, methods=["GET"])]
