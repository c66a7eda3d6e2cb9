"""Alerts: the webhooks alerts go to (add, enable/disable, test, remove) and the alerts
raised lately with their delivery. A thin face over tollway.services.alerts."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollway.services import alerts as alert_service
from tollway.services.alert_delivery import send_test
from tollway.services.errors import Invalid, NotFound
from tollway.ui import forms
from tollway.ui.web import UI, admin, ui_of
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box

DONE = {
    "removed": "Webhook removed.",
    "enabled": "Webhook enabled.",
    "disabled": "Webhook disabled: no alerts go to it until it is enabled again.",
}


def _box(ui: UI) -> SecretBox:
    try:
        return secret_box(ui.settings)
    except SecretKeyMissing as exc:
        raise Invalid(str(exc)) from None


async def _page(request: Request, status: int = 200, **ctx: Any) -> Response:
    ui = ui_of(request)
    engine = ui.runtime.engine
    s = ui.settings
    ctx.setdefault("form", {"name": "", "url": "", "kinds": list(alert_service.KINDS)})
    for name in ("error", "created", "tested"):
        ctx.setdefault(name, None)
    return ui.render(
        request,
        "alerts.html",
        status=status,
        title="Alerts",
        webhooks=await alert_service.list_webhooks(engine),
        recent=await alert_service.recent_alerts(engine, 50),
        kinds=alert_service.KIND_LABELS,
        thresholds=", ".join(f"{t:g} %" for t in s.budget_thresholds()),
        expiry_days=s.alert_expiry_days,
        interval=s.alert_interval,
        done=DONE.get(request.query_params.get("done", ""), ""),
        **ctx,
    )


@admin
async def page(request: Request) -> Response:
    return await _page(request)


@admin
async def create(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    kinds = [k for k in form.getlist("kinds") if isinstance(k, str)]
    data = {
        "name": forms.text(form, "name"),
        "url": forms.text(form, "url"),
        # every kind ticked = "all", so kinds added later reach it too
        "kinds": None if set(kinds) >= set(alert_service.KINDS) else kinds,
    }
    try:
        if not kinds:
            raise Invalid("kinds: tick at least one kind of alert")
        created = await alert_service.create_webhook(ui.runtime.engine, data, _box(ui))
    except Invalid as exc:
        return await _page(request, 400, error=exc.message, form={**data, "kinds": kinds or []})
    return await _page(request, 201, created=created)


def _webhook_id(request: Request) -> int:
    return int(request.path_params["webhook_id"])


@admin
async def toggle(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    enabled = forms.text(form, "enabled") == "true"
    try:
        await alert_service.update_webhook(
            ui.runtime.engine, _webhook_id(request), {"enabled": enabled}
        )
    except NotFound as exc:
        return await _page(request, 404, error=exc.message)
    return RedirectResponse(f"/alerts?done={'enabled' if enabled else 'disabled'}", 303)


@admin
async def test(request: Request) -> Response:
    ui = ui_of(request)
    try:
        result = await send_test(
            ui.runtime.engine, _box(ui), _webhook_id(request), ui.settings.alert_timeout
        )
    except NotFound as exc:
        return await _page(request, 404, error=exc.message)
    return await _page(request, tested=result)


@admin
async def remove(request: Request) -> Response:
    ui = ui_of(request)
    try:
        await alert_service.delete_webhook(ui.runtime.engine, _webhook_id(request))
    except NotFound as exc:
        return await _page(request, 404, error=exc.message)
    return RedirectResponse("/alerts?done=removed", 303)


routes = [
    Route("/alerts", page, methods=["GET"]),
    Route("/alerts", create, methods=["POST"]),
    Route("/alerts/{webhook_id:int}/toggle", toggle, methods=["POST"]),
    Route("/alerts/{webhook_id:int}/test", test, methods=["POST"]),
    Route("/alerts/{webhook_id:int}/delete", remove, methods=["POST"]),
]
