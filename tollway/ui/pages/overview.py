"""Home: live totals (last 24 hours and all time), upstream health at a glance and the latest
requests. The totals block re-fetches itself every few seconds with htmx."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollway.services import keys as key_service
from tollway.services import upstreams as upstream_service
from tollway.services import usage as usage_service
from tollway.ui.web import UI, admin, ui_of, utcnow

REFRESH_SECONDS = 5


async def _live(ui: UI) -> dict[str, Any]:
    engine = ui.runtime.engine
    now = utcnow()
    active = await key_service.list_keys(engine, limit=1, status="active")
    recent = await usage_service.list_records(engine, limit=10)
    return {
        "day": await usage_service.totals(engine, start=now - timedelta(hours=24)),
        "all": await usage_service.totals(engine),
        "active_keys": active.total,
        "recent": recent.items,
        "upstreams": await upstream_service.upstream_status(ui.runtime.pool),
        "in_flight": sum(up.in_flight for up in ui.runtime.pool.upstreams),
        "refresh": REFRESH_SECONDS,
        "now": now,
    }


@admin
async def overview(request: Request) -> Response:
    ui = ui_of(request)
    return ui.render(request, "overview.html", title="Overview", **await _live(ui))


@admin
async def live(request: Request) -> Response:
    ui = ui_of(request)
    return ui.render(request, "_live.html", **await _live(ui))


routes = [
    Route("/", overview, methods=["GET"]),
    Route("/live", live, methods=["GET"]),
]
