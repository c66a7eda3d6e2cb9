"""/alerts: webhooks (add, list, change, remove, test) and the alerts raised; a thin face
over tollway.services.alerts. Webhook URLs and secrets are write-only (a hint is shown; the
secret once, at creation)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response

from tollway.admin.deps import Engine, get_runtime
from tollway.admin.params import ID_MAX
from tollway.services import alerts
from tollway.services.alert_delivery import TestResult, send_test
from tollway.services.errors import Invalid
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box

router = APIRouter(prefix="/alerts", tags=["alerts"])
WebhookId = Annotated[int, Path(ge=1, le=ID_MAX, description="The webhook's numeric id.")]


def _box(request: Request) -> SecretBox:
    try:
        return secret_box(get_runtime(request).settings)
    except SecretKeyMissing as exc:
        raise Invalid(str(exc)) from None


@router.get("", response_model=list[alerts.AlertInfo], summary="Alerts raised, newest first")
async def recent(
    engine: Engine, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[alerts.AlertInfo]:
    """Each with how many webhooks took it and the last delivery error."""
    return await alerts.recent_alerts(engine, limit)


@router.post("/check", response_model=list[int], summary="Check for alerts now")
async def check(request: Request) -> list[int]:
    """Runs this instance's check at once (it also runs every TOLLWAY_ALERT_INTERVAL
    seconds); returns the ids of the alerts it raised, which are being sent."""
    monitor = get_runtime(request).alerts
    if monitor is None:
        raise Invalid("alerts are not running on this instance")
    return await monitor.check()


@router.get("/webhooks", response_model=list[alerts.WebhookInfo], summary="List webhooks")
async def list_webhooks(engine: Engine) -> list[alerts.WebhookInfo]:
    return await alerts.list_webhooks(engine)


@router.post(
    "/webhooks", response_model=alerts.CreatedWebhook, status_code=201, summary="Add a webhook"
)
async def create_webhook(
    request: Request, engine: Engine, spec: Annotated[alerts.WebhookCreate, Body()]
) -> alerts.CreatedWebhook:
    """The answer holds the signing secret (generated unless given): shown only now."""
    return await alerts.create_webhook(engine, spec, _box(request))


@router.patch(
    "/webhooks/{webhook_id}", response_model=alerts.WebhookInfo, summary="Change a webhook"
)
async def update_webhook(
    engine: Engine, webhook_id: WebhookId, changes: Annotated[alerts.WebhookUpdate, Body()]
) -> alerts.WebhookInfo:
    """`kinds` (null = every kind) and `enabled`; only the fields sent change."""
    return await alerts.update_webhook(engine, webhook_id, changes)


@router.delete(
    "/webhooks/{webhook_id}", status_code=204, response_class=Response, summary="Remove a webhook"
)
async def delete_webhook(engine: Engine, webhook_id: WebhookId) -> Response:
    await alerts.delete_webhook(engine, webhook_id)
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/test", response_model=TestResult, summary="Send a test alert")
async def test_webhook(request: Request, engine: Engine, webhook_id: WebhookId) -> TestResult:
    rt = get_runtime(request)
    return await send_test(engine, _box(request), webhook_id, rt.settings.alert_timeout)
