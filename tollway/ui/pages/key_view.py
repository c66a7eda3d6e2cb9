"""What the keys list and the key page show about a key's standing: one bar per limit with
what is used and what remains (the numbers come from services.key_status)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core import fmt
from tollway.services import usage as usage_service
from tollway.services.keys import KeyInfo

CHART_DAYS = 30


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    used: str
    allowed: str
    left: str
    percent: float  # 0-100, for the bar's width
    full: bool


def _bar(label: str, used: float, allowed: float, show: str) -> Bar:
    text = fmt.usd if show == "usd" else fmt.count
    percent = 100.0 if allowed <= 0 else min(100.0, used / allowed * 100.0)
    return Bar(
        label,
        text(used),
        text(allowed),
        text(max(0.0, allowed - used)) if show == "usd" else text(max(0, int(allowed - used))),
        round(percent, 1),
        used >= allowed,
    )


def bars(key: KeyInfo) -> list[Bar]:
    """Budget and token quota (exact), then the per-minute windows (last 60 s of requests)."""
    s = key.summary
    if s is None:
        return []
    out: list[Bar] = []
    if key.budget_usd is not None:
        period = {"none": "total", "daily": "today", "weekly": "this week"}.get(
            key.budget_period, "this month"
        )
        out.append(_bar(f"Budget ({period})", s.spent_usd, key.budget_usd, "usd"))
    if key.token_quota is not None:
        out.append(_bar("Token quota", s.tokens_used, key.token_quota, "count"))
    if key.rpm is not None:
        out.append(_bar("Requests, last minute", s.requests_last_minute, key.rpm, "count"))
    if key.tpm is not None:
        out.append(_bar("Tokens, last minute", s.tokens_last_minute, key.tpm, "count"))
    return out


async def page_data(engine: AsyncEngine, key: KeyInfo) -> dict[str, Any]:
    """The key page beside its form: bars, usage per day (30 days), recent requests, errors."""
    stats = await usage_service.key_stats(engine, key.id, recent=10)
    errors = await usage_service.list_records(engine, key_id=key.id, status="error", limit=10)
    series = await usage_service.timeseries(engine, bucket="day", key_id=key.id)
    chart = {
        "x": [int(p.bucket.timestamp()) for p in series],
        "requests": [p.requests for p in series],
        "errors": [p.errors for p in series],
        "cost": [round(p.cost_usd, 10) for p in series],
    }
    return {
        "stats": stats,
        "bars": bars(key),
        "errors": errors.items,
        "chart_json": json.dumps(chart).replace("<", "\\u003c"),
    }
