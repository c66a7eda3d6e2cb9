"""What is worth an alert right now: keys past a budget threshold this period, keys near
their expiry, upstreams down or out of credit. Each finding is a `Crossing` whose
(kind, subject, period) names it once: the same crossing found again is the same alert."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

# Pure calendar arithmetic shared with the limiter, so alerts and refusals agree on periods.
from tollway.gateway.limiting.windows import period_bounds
from tollway.services.upstreams import UpstreamStatus
from tollway.store.queries import as_utc, from_unix
from tollway.store.rollup_shapes import KEY, dims_is
from tollway.store.tables import api_keys, usage_cube

DOWN = {"cooldown": "upstream_down", "key_rejected": "upstream_down"}
NO_CREDIT = {"out_of_credit": "upstream_credit"}
UPSTREAM_KINDS = ("upstream_down", "upstream_credit")


@dataclass
class Crossing:
    kind: str
    subject: str  # key:<id> | upstream:<name>
    period: str  # budget: "<period start>:<threshold>"; expiry: the expiry; upstream: episode
    text: str  # the Slack-style one-liner
    fields: dict[str, Any] = field(default_factory=dict)
    rank: float = 0.0  # budget threshold: of several crossed at once, the highest is sent


def _period_label(kind: str, start: float) -> str:
    if kind == "none":
        return "total"
    return f"{kind} {datetime.fromtimestamp(start, UTC).date().isoformat()}"


async def budget_crossings(
    engine: AsyncEngine, thresholds: list[float], now: float
) -> list[Crossing]:
    """Every enabled key with a budget, against each threshold its spend this period passed.

    The database sums the spend and returns only the keys past the lowest threshold: this
    runs every TOLLWAY_ALERT_INTERVAL on every instance's event loop, and reading every key
    with a budget (a million keys: a million rows and an IN list as long) stalled it for
    seconds and took hundreds of MB."""
    if not thresholds:
        return []
    k, r = api_keys.c, usage_cube.c  # the per-key shape: one row per key and hour
    budgeted = and_(k.enabled.is_(True), k.budget_usd > 0)
    spend = func.sum(r.cost_usd)
    floor = min(thresholds) / 100.0 * (1 - 1e-9)  # a hair low: the exact test is below
    by_period: dict[str, list[Any]] = {}
    async with engine.connect() as conn:
        stored = (await conn.execute(select(k.budget_period).where(budgeted).distinct())).all()
        kinds: dict[str, list[str]] = defaultdict(list)
        for (raw,) in stored:  # the column is NOT NULL; "" counts as "none" as before
            kinds[raw or "none"].append(raw)
        for kind in sorted(kinds):
            start = period_bounds(kind, now)[0]
            stmt = (
                select(k.id, k.name, k.budget_usd, spend.label("spent"))
                .select_from(api_keys.join(usage_cube, r.key_id == k.id))
                .where(
                    budgeted,
                    dims_is(r.dims, KEY),
                    k.budget_period.in_(kinds[kind]),
                    r.hour >= from_unix(start),
                )
                .group_by(k.id, k.name, k.budget_usd)
                .having(spend >= k.budget_usd * floor)
                .order_by(k.id)
            )
            by_period[kind] = list((await conn.execute(stmt)).all())
    out = []
    for kind, rows in by_period.items():
        start = period_bounds(kind, now)[0]
        label = _period_label(kind, start)
        for row in rows:
            spent = float(row.spent)
            pct = spent / row.budget_usd * 100.0
            for t in thresholds:
                if pct < t:
                    break
                out.append(
                    Crossing(
                        "budget",
                        f"key:{row.id}",
                        f"{label}:{t:g}",
                        f"Key “{row.name}” (id {row.id}) has spent ${spent:,.4f} of its "
                        f"${row.budget_usd:,.2f} {kind if kind != 'none' else 'total'} budget "
                        f"({pct:.0f}%, past the {t:g}% threshold).",
                        {
                            "key_id": row.id,
                            "key_name": row.name,
                            "spent_usd": round(spent, 6),
                            "budget_usd": row.budget_usd,
                            "budget_period": kind,
                            "percent": round(pct, 1),
                            "threshold": t,
                        },
                        rank=t,
                    )
                )
    return out


async def expiry_crossings(engine: AsyncEngine, days: float, now: float) -> list[Crossing]:
    """Enabled keys that expire within `days` (and have not expired yet)."""
    if days <= 0:
        return []
    k = api_keys.c
    start = from_unix(now)
    stmt = select(k.id, k.name, k.expires_at).where(
        k.enabled.is_(True),
        k.expires_at.is_not(None),
        k.expires_at > start,
        k.expires_at <= start + timedelta(days=days),
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    out = []
    for row in rows:
        expires = as_utc(row.expires_at)
        left = (expires - start).total_seconds() / 86400
        out.append(
            Crossing(
                "key_expiry",
                f"key:{row.id}",
                expires.isoformat(),
                f"Key “{row.name}” (id {row.id}) expires on "
                f"{expires.strftime('%Y-%m-%d %H:%M')} UTC (in {left:.1f} days).",
                {"key_id": row.id, "key_name": row.name, "expires_at": expires.isoformat()},
            )
        )
    return out


def upstream_findings(statuses: list[UpstreamStatus]) -> tuple[list[Crossing], set[str]]:
    """(upstreams in trouble now, with period left for the episode counter to fill; names of
    the healthy ones, whose episodes end)."""
    found, healthy = [], set()
    for s in statuses:
        kind = NO_CREDIT.get(s.health) or DOWN.get(s.health)
        if kind is None:
            if s.health == "healthy":
                healthy.add(s.name)
            continue
        what = "is out of credit" if kind == "upstream_credit" else f"is down ({s.health})"
        detail = f": {s.last_error}" if s.last_error else ""
        found.append(
            Crossing(
                kind,
                f"upstream:{s.name}",
                "",
                f"Upstream “{s.name}” {what}{detail}.",
                {
                    "upstream": s.name,
                    "health": s.health,
                    "account": s.account,
                    "last_error": s.last_error,
                    "balance_usd": s.balance_usd,
                },
            )
        )
    return found, healthy
