"""Balance probes: ask a provider how much credit a key's account has left.

- Vercel AI Gateway: `GET {base_url}/credits` (base_url .../v1) with the key as Bearer;
  `{"balance": "95.50", "total_used": "4.50"}` (strings). The balance is the team's, so one
  key per account is enough.
- OpenRouter: `GET {base_url}/key` (base_url .../api/v1); `{"data": {"limit": 100,
  "limit_remaining": 74.5, "usage": 25.5, ...}}`. The limit is the key's own; `null` means no
  limit, so the balance is unknown. Keys grouped under one account add up.
- manual: no call; the configured balance minus recorded cost (pool.on_usage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from .egress import EgressDefaults
from .pool import Pool
from .target import Account, Upstream
from .verdict import MAX_JUDGED_BODY, key_rejected

log = logging.getLogger("tollway.upstreams")


NET = EgressDefaults()  # the system CA store and the environment's proxies


class ProbeError(Exception):
    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected  # the provider refused the key itself


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_vercel(data: Any) -> float:
    balance = _number(data.get("balance")) if isinstance(data, dict) else None
    if balance is None:
        raise ProbeError("credits answer has no balance")
    return balance


def parse_openrouter(data: Any) -> float | None:
    inner = data.get("data") if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        raise ProbeError("key answer has no data")
    return _number(inner.get("limit_remaining"))


async def probe_key(
    session: aiohttp.ClientSession, up: Upstream, kind: str, net: EgressDefaults = NET
) -> float | None:
    """One key's balance in USD (None: the provider sets no limit)."""
    url = up.base_url + ("/credits" if kind == "vercel" else "/key")
    headers = {"Authorization": f"Bearer {up.api_key}"}
    try:
        async with session.get(url, headers=headers, **net.aiohttp_options(url, up.egress)) as resp:
            if resp.status != 200:
                body = await resp.content.read(MAX_JUDGED_BODY + 1)
                # The relay's rule: only a 401 about our key parks it (a key without the
                # right to read its balance still serves requests).
                if key_rejected(resp.status, body):
                    raise ProbeError(f"key rejected (HTTP {resp.status})", rejected=True)
                raise ProbeError(f"HTTP {resp.status}")
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ProbeError(type(exc).__name__) from exc
    return parse_vercel(data) if kind == "vercel" else parse_openrouter(data)


async def probe_account(
    session: aiohttp.ClientSession,
    pool: Pool,
    acct: Account,
    keys: list[Upstream],
    net: EgressDefaults = NET,
) -> None:
    """Refresh one account's balance in the pool; errors are kept on the account and logged."""
    kind = acct.probe
    if kind not in ("vercel", "openrouter") or not keys:
        return
    errors: list[str] = []
    if kind == "vercel":
        # The team balance: the first key that answers will do.
        for up in keys:
            try:
                balance: float | None = await probe_key(session, up, kind, net)
            except ProbeError as exc:
                errors.append(f"{up.name}: {exc}")
                if exc.rejected:
                    pool.on_key_rejected(up, 401)
                continue
            pool.set_balance(acct, balance, time.time())
            return
    else:
        results = await asyncio.gather(
            *(probe_key(session, up, kind, net) for up in keys), return_exceptions=True
        )
        total: float | None = 0.0
        ok = False
        for up, result in zip(keys, results, strict=True):
            if isinstance(result, ProbeError):
                errors.append(f"{up.name}: {result}")
                if result.rejected:
                    pool.on_key_rejected(up, 401)
            elif isinstance(result, BaseException):
                raise result
            else:
                ok = True
                total = None if result is None or total is None else total + result
        if ok:
            pool.set_balance(acct, total, time.time())
            return
    acct.probe_error = "; ".join(errors) or "no key answered"
    log.warning("balance probe for account %s failed: %s", acct.name, acct.probe_error)


async def probe_all(
    session: aiohttp.ClientSession,
    pool: Pool,
    only: set[str] | None = None,
    parallel: int = 8,
    net: EgressDefaults = NET,
) -> None:
    """Probe every account with a provider probe (or only the named accounts)."""
    keys: dict[Account, list[Upstream]] = {}
    for up in pool.upstreams:
        if up.acct.probe in ("vercel", "openrouter") and (only is None or up.acct.name in only):
            keys.setdefault(up.acct, []).append(up)
    gate = asyncio.Semaphore(parallel)

    async def one(acct: Account, ups: list[Upstream]) -> None:
        async with gate:
            await probe_account(session, pool, acct, ups, net)

    await asyncio.gather(*(one(a, u) for a, u in keys.items()))
