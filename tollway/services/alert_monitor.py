"""The alert checker every instance runs in the background (app.py starts it), off the
request path: every TOLLWAY_ALERT_INTERVAL seconds it finds crossings, claims each with an
INSERT that the unique (kind, subject, period) lets only one instance win, and sends what it
won to the webhooks. So an alert goes out once per crossing however many instances check."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.settings import Settings
from tollway.services import alerts
from tollway.services.alert_checks import (
    UPSTREAM_KINDS,
    Crossing,
    budget_crossings,
    expiry_crossings,
    upstream_findings,
)
from tollway.services.alert_delivery import body_of, deliver
from tollway.services.upstreams import UpstreamStatus
from tollway.store.queries import upsert, utcnow
from tollway.store.tables import alert_events
from tollway.upstreams.crypto import SecretBox

log = logging.getLogger("tollway.alerts")
Statuses = Callable[[], Awaitable[list[UpstreamStatus]]]
e = alert_events.c


class AlertMonitor:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        statuses: Statuses,
        box: Callable[[], SecretBox],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.statuses = statuses
        self.box = box
        self.runs = 0  # completed checks (tests wait on it, never on time)
        self.sending: set[asyncio.Task[None]] = set()
        self.client = httpx.AsyncClient(timeout=settings.alert_timeout, follow_redirects=False)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.alert_interval)
            try:
                await self.check()
            except Exception:
                log.warning("alert check failed", exc_info=True)

    async def close(self) -> None:
        for task in list(self.sending):
            task.cancel()
        await asyncio.gather(*self.sending, return_exceptions=True)
        await self.client.aclose()

    async def check(self, now: float | None = None) -> list[int]:
        """One round; returns the ids of the alerts this instance raised (and is sending)."""
        now = time.time() if now is None else now
        s = self.settings
        found = await budget_crossings(self.engine, s.budget_thresholds(), now)
        found += await expiry_crossings(self.engine, s.alert_expiry_days, now)
        found += await self._upstream_episodes()
        won = await _claim(self.engine, found)
        # Several thresholds of one key crossed at once: one message, the highest.
        top: dict[tuple[str, str], tuple[int, Crossing]] = {}
        for alert_id, c in won:
            best = top.get((c.kind, c.subject))
            if best is None or c.rank > best[1].rank:
                top[(c.kind, c.subject)] = (alert_id, c)
        for alert_id, c in top.values():
            task = asyncio.get_running_loop().create_task(self._send(alert_id, c))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
        self.runs += 1
        return sorted(alert_id for alert_id, _ in top.values())

    async def _upstream_episodes(self) -> list[Crossing]:
        """An upstream in trouble opens an episode (numbered per upstream and kind) unless
        one is open; back to healthy closes it. Each episode alerts once."""
        found, healthy = upstream_findings(await self.statuses())
        out = []
        async with self.engine.begin() as conn:
            for name in sorted(healthy):
                await conn.execute(
                    update(alert_events)
                    .where(
                        e.kind.in_(UPSTREAM_KINDS),
                        e.subject == f"upstream:{name}",
                        e.resolved_at.is_(None),
                    )
                    .values(resolved_at=utcnow())
                )
            for c in found:
                last = (
                    await conn.execute(
                        select(e.period, e.resolved_at)
                        .where(e.kind == c.kind, e.subject == c.subject)
                        .order_by(e.id.desc())
                        .limit(1)
                    )
                ).first()
                if last is not None and last.resolved_at is None:
                    continue  # this episode has been alerted
                c.period = str(int(last.period) + 1 if last is not None else 1)
                out.append(c)
        return out

    async def _send(self, alert_id: int, c: Crossing) -> None:
        s = self.settings
        try:
            targets = [
                t
                for t in await alerts.targets(self.engine, self.box())
                if t.kinds is None or c.kind in t.kinds
            ]
        except Exception as exc:  # no server secret, an undecryptable row...
            log.warning("alert %d not sent: %s", alert_id, type(exc).__name__)
            await _result(self.engine, alert_id, 0, 1, f"webhooks unreadable: {type(exc).__name__}")
            return
        body = body_of(alert_id, c.kind, c.subject, c.period, c.text, c.fields, utcnow())
        results = await asyncio.gather(
            *(deliver(self.client, t, body, s.alert_tries, s.alert_retry_base) for t in targets)
        )
        errors = [f"{t.name}: {err}" for t, err in zip(targets, results, strict=True) if err]
        for err in errors:
            log.warning("alert %d not delivered to %s", alert_id, err)
        await _result(
            self.engine,
            alert_id,
            len(targets) - len(errors),
            len(errors),
            "; ".join(errors)[:300] or None,
        )


async def _claim(engine: AsyncEngine, found: list[Crossing]) -> list[tuple[int, Crossing]]:
    """Insert every crossing not yet raised; return those this call inserted. One transaction
    in a fixed order, so concurrent instances wait on each other's rows instead of deadlocking."""
    won = []
    now = utcnow()
    async with engine.begin() as conn:
        for c in sorted(found, key=lambda c: (c.kind, c.subject, c.period)):
            stmt = (
                upsert(conn, alert_events)
                .values(
                    kind=c.kind,
                    subject=c.subject[:300],
                    period=c.period[:100],
                    text=c.text[:1000],
                    fields=c.fields,
                    created_at=now,
                    delivered=0,
                    failed=0,
                )
                .on_conflict_do_nothing(index_elements=["kind", "subject", "period"])
                .returning(e.id)
            )
            alert_id = (await conn.execute(stmt)).scalar()
            if alert_id is not None:
                won.append((int(alert_id), c))
    return won


async def _result(
    engine: AsyncEngine, alert_id: int, delivered: int, failed: int, error: str | None
) -> None:
    values: dict[str, Any] = {"delivered": delivered, "failed": failed, "last_error": error}
    async with engine.begin() as conn:
        await conn.execute(update(alert_events).where(e.id == alert_id).values(values))


def start_monitor(
    engine: AsyncEngine, settings: Settings, statuses: Statuses
) -> tuple[AlertMonitor, asyncio.Task[None] | None]:
    """The instance's monitor, and its checking task (None with TOLLWAY_ALERT_INTERVAL=0:
    alerts can still be checked on demand and webhooks tested)."""
    from tollway.upstreams.crypto import secret_box

    monitor = AlertMonitor(engine, settings, statuses, lambda: secret_box(settings))
    if settings.alert_interval <= 0:
        return monitor, None
    return monitor, asyncio.get_running_loop().create_task(monitor.run())
