"""Where each key stands right now: spend this budget period against its budget, tokens
against its quota, requests today, and one badge (active, expired, exhausted, limited,
disabled) that the API, the CLI and the UI all show.

Read from usage, not from the running limiter, so every face (the CLI on the database too)
and every instance agree, and a list of keys costs two queries whatever its length:
- spend and tokens come from the daily per-key rollups (budget periods start on UTC days, so the
  sums split exactly where the limiter's periods do);
- "limited" means one of the key's own limits refused a request in the last 60 seconds, or
  the last 60 seconds of its raw rows already fill its rpm or tpm. A full daily window
  (rpd/tpd) or a full max_parallel shows only once it refuses a request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tollway.core import fmt
from tollway.gateway.limiting.windows import period_bounds
from tollway.store.rollup_shapes import KEY, dims_is
from tollway.store.tables import usage_cube_daily, usage_records

KeyBadge = Literal["active", "expired", "exhausted", "limited", "disabled"]
BADGES: tuple[KeyBadge, ...] = ("active", "expired", "exhausted", "limited", "disabled")
WINDOW = timedelta(seconds=60)
# error codes the gateway's own limiter answers with (rows refused before any upstream)
RATE_CODES = ("rate_limit_exceeded", "concurrency_limit_exceeded")
PERIOD_KINDS = ("daily", "weekly", "monthly")
PERIOD_WORDS = {"none": "in all", "daily": "today", "weekly": "this week", "monthly": "this month"}


class KeySummary(BaseModel):
    """A key's standing now. `reasons` say in words why the badge is not "active"."""

    badge: KeyBadge
    reasons: list[str]
    budget_period_start: datetime | None  # None: the budget never resets (or no budget)
    budget_period_end: datetime | None
    spent_usd: float  # this budget period (all time when the period is "none")
    budget_left_usd: float | None  # None = no budget
    tokens_used: int  # all time, what the token quota counts
    tokens_left: int | None  # None = no quota
    requests_today: int  # UTC day
    requests_last_minute: int
    tokens_last_minute: int


@dataclass(slots=True)
class _Usage:
    tokens: int = 0
    requests_today: int = 0
    spent: dict[str, float] | None = None
    minute_requests: int = 0
    minute_tokens: int = 0
    refused: set[str] | None = None


def _stamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def _read(conn: AsyncConnection, ids: list[int], now: datetime) -> dict[int, _Usage]:
    """Two grouped queries for all `ids`: daily rollups (all time), raw rows (last minute)."""
    d = usage_cube_daily.c  # the per-key shape: one row per key and day
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {kind: _stamp(period_bounds(kind, now.timestamp())[0]) for kind in PERIOD_KINDS}
    spend_cols = [
        func.coalesce(func.sum(case((d.day >= start, d.cost_usd), else_=0.0)), 0.0).label(kind)
        for kind, start in starts.items()
    ]
    daily = select(
        d.key_id,
        func.coalesce(func.sum(d.total_tokens), 0).label("tokens"),
        func.coalesce(func.sum(case((d.day >= today, d.requests), else_=0)), 0).label("today"),
        func.coalesce(func.sum(d.cost_usd), 0.0).label("none"),
        *spend_cols,
    ).where(dims_is(d.dims, KEY), d.key_id.in_(ids))
    u = usage_records.c
    own_refusal = and_(u.status == 429, u.upstream.is_(None), u.error_type.in_(RATE_CODES))
    minute = (
        select(
            u.key_id,
            u.error_type,
            own_refusal.label("refused"),
            func.count().label("n"),
            func.coalesce(func.sum(u.total_tokens), 0).label("tokens"),
        )
        .where(u.key_id.in_(ids), u.ts >= now - WINDOW)
        .group_by(u.key_id, u.error_type, own_refusal)
    )
    out = {i: _Usage() for i in ids}
    for row in (await conn.execute(daily.group_by(d.key_id))).all():
        acc = out[int(row.key_id)]
        acc.tokens, acc.requests_today = int(row.tokens), int(row.today)
        acc.spent = {k: float(getattr(row, k)) for k in ("none", *PERIOD_KINDS)}
    for row in (await conn.execute(minute)).all():
        acc = out[int(row.key_id)]
        if row.refused:
            acc.refused = (acc.refused or set()) | {str(row.error_type)}
        else:  # refused requests were never charged to the key's windows
            acc.minute_requests += int(row.n)
            acc.minute_tokens += int(row.tokens)
    return out


def _summary(key: Any, base_status: str, use: _Usage, now: datetime) -> KeySummary:
    reasons: list[str] = []
    period = key.budget_period if key.budget_period in PERIOD_KINDS else "none"
    spent = (use.spent or {}).get(period, 0.0)
    start = end = None
    if period != "none":
        lo, hi = period_bounds(period, now.timestamp())
        start, end = _stamp(lo), _stamp(hi)
    budget_left = None if key.budget_usd is None else max(0.0, key.budget_usd - spent)
    tokens_left = None if key.token_quota is None else max(0, key.token_quota - use.tokens)
    exhausted = False
    if key.budget_usd is not None and spent >= key.budget_usd:
        exhausted = True
        when = PERIOD_WORDS[period]
        reasons.append(
            f"budget spent: {fmt.usd(spent)} of {fmt.usd(key.budget_usd)} ({when})"
            + (f", resets {end:%Y-%m-%d %H:%M} UTC" if end else "")
        )
    if key.token_quota is not None and use.tokens >= key.token_quota:
        exhausted = True
        reasons.append(f"token quota used: {use.tokens:,} of {key.token_quota:,} tokens")
    limited = []
    if key.rpm is not None and use.minute_requests >= key.rpm:
        limited.append(f"requests per minute full: {use.minute_requests:,} of {key.rpm:,}")
    if key.tpm is not None and use.minute_tokens >= key.tpm:
        limited.append(f"tokens per minute full: {use.minute_tokens:,} of {key.tpm:,}")
    refused = use.refused or set()
    if not limited and "rate_limit_exceeded" in refused:
        limited.append("a rate limit refused its requests in the last minute")
    if "concurrency_limit_exceeded" in refused:
        limited.append(f"parallel requests full ({key.max_parallel} at once) in the last minute")
    reasons.extend(limited)
    badge: KeyBadge
    if base_status in ("disabled", "expired"):
        badge = "disabled" if base_status == "disabled" else "expired"
        reasons.insert(0, f"key {base_status}")
    elif exhausted:
        badge = "exhausted"
    elif limited:
        badge = "limited"
    else:
        badge = "active"
    return KeySummary(
        badge=badge,
        reasons=reasons,
        budget_period_start=start,
        budget_period_end=end,
        spent_usd=spent,
        budget_left_usd=budget_left,
        tokens_used=use.tokens,
        tokens_left=tokens_left,
        requests_today=use.requests_today,
        requests_last_minute=use.minute_requests,
        tokens_last_minute=use.minute_tokens,
    )


async def summaries(
    conn: AsyncConnection, keys: Iterable[tuple[Any, str]], now: datetime
) -> dict[int, KeySummary]:
    """`keys`: (a row or KeyInfo with the key's limit columns, its status) pairs."""
    pairs = list(keys)
    if not pairs:
        return {}
    usage = await _read(conn, [int(k.id) for k, _ in pairs], now)
    return {int(k.id): _summary(k, status, usage[int(k.id)], now) for k, status in pairs}
