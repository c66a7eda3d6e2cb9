"""Sending an alert: a Slack-compatible JSON body (`text`, plus the structured `alert`),
signed with each webhook's secret, POSTed with retries and exponential backoff.

Signature: `X-Tollway-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>` with
the timestamp (unix seconds) in `X-Tollway-Timestamp`; a receiver recomputes it and may refuse
old timestamps (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.alerts import Target, targets
from tollway.store.queries import utcnow
from tollway.upstreams.crypto import SecretBox

Sleep = Callable[[float], Awaitable[None]]


def body_of(
    alert_id: int,
    kind: str,
    subject: str,
    period: str,
    text: str,
    fields: dict[str, Any],
    at: datetime,
) -> bytes:
    alert = {
        "id": alert_id,
        "kind": kind,
        "subject": subject,
        "period": period,
        "at": at.isoformat(),
        **fields,
    }
    return orjson.dumps({"text": f"[Tollway] {text}", "alert": alert})


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def deliver(
    client: httpx.AsyncClient,
    target: Target,
    body: bytes,
    tries: int,
    retry_base: float,
    sleep: Sleep = asyncio.sleep,
) -> str | None:
    """None once the webhook answered 2xx; else why the last try failed (never the URL,
    which may hold a token)."""
    error: str | None = None
    for attempt in range(tries):
        if attempt:
            await sleep(retry_base * 2 ** (attempt - 1))
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "user-agent": "Tollway-Alerts",
            "x-tollway-timestamp": timestamp,
            "x-tollway-signature": signature(target.secret, timestamp, body),
        }
        try:
            resp = await client.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__} (try {attempt + 1} of {tries})"
            continue
        if 200 <= resp.status_code < 300:
            return None
        error = f"HTTP {resp.status_code} (try {attempt + 1} of {tries})"
    return error


class TestResult(BaseModel):
    ok: bool
    error: str | None  # why the webhook did not take it (HTTP status, connection error)


async def send_test(
    engine: AsyncEngine, box: SecretBox, webhook_id: int, wait_s: float
) -> TestResult:
    """One signed test message to one webhook (enabled or not), no retries."""
    (target,) = await targets(engine, box, webhook_id)
    body = body_of(
        0,
        "test",
        f"webhook:{target.name}",
        "test",
        f"Test alert to webhook “{target.name}”: it works.",
        {},
        utcnow(),
    )
    async with httpx.AsyncClient(timeout=wait_s, follow_redirects=False) as client:
        error = await deliver(client, target, body, 1, 0.0)
    return TestResult(ok=error is None, error=error)
