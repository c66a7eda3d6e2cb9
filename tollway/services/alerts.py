"""Alert webhooks (add, list, change, remove) and the alerts raised so far.

A webhook's URL and signing secret are stored encrypted with the server secret (a Slack
webhook URL is itself a credential); lists show only `url_hint` (scheme and host). The
secret is shown once, when the webhook is created.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid, NotFound
from tollway.store.queries import as_utc, utcnow
from tollway.store.tables import alert_events, alert_webhooks
from tollway.upstreams.crypto import SecretBox

AlertKind = Literal["budget", "key_expiry", "upstream_down", "upstream_credit"]
KINDS: tuple[AlertKind, ...] = ("budget", "key_expiry", "upstream_down", "upstream_credit")
KIND_LABELS = {
    "budget": "key budget thresholds",
    "key_expiry": "key near expiry",
    "upstream_down": "upstream down",
    "upstream_credit": "upstream out of credit",
}
SECRET_PREFIX = "whsec_"


class WebhookCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    secret: str | None = Field(default=None, min_length=16, max_length=200)  # None: generated
    kinds: list[AlertKind] | None = None  # None = every kind
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("a name, please")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL, e.g. https://hooks.slack.com/…")
        return v

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: list[AlertKind] | None) -> list[AlertKind] | None:
        if v is not None and not v:
            raise ValueError("at least one kind, or none for all")
        return sorted(set(v), key=KINDS.index) if v is not None else None


class WebhookUpdate(BaseModel):
    kinds: list[AlertKind] | None = None
    enabled: bool | None = None


class WebhookInfo(BaseModel):
    id: int
    name: str
    url_hint: str  # scheme://host/… : the full URL may hold a token
    kinds: list[AlertKind] | None
    enabled: bool
    created_at: datetime


class CreatedWebhook(BaseModel):
    info: WebhookInfo
    secret: str  # the HMAC-SHA256 signing secret; shown only now


class AlertInfo(BaseModel):
    id: int
    kind: str
    subject: str
    period: str
    text: str
    fields: dict[str, Any] | None
    created_at: datetime
    resolved_at: datetime | None
    delivered: int
    failed: int
    last_error: str | None


def url_hint(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _info(row: Any) -> WebhookInfo:
    return WebhookInfo(
        id=row.id,
        name=row.name,
        url_hint=row.url_hint,
        kinds=row.kinds,
        enabled=bool(row.enabled),
        created_at=as_utc(row.created_at),
    )


def _parse(model: type[BaseModel], data: Any) -> Any:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise Invalid(f"{where}: {first['msg']}") from None


async def create_webhook(engine: AsyncEngine, data: Any, box: SecretBox) -> CreatedWebhook:
    spec: WebhookCreate = _parse(WebhookCreate, data)
    secret = spec.secret or SECRET_PREFIX + secrets.token_urlsafe(24)
    values = {
        "name": spec.name,
        "url_enc": box.encrypt(spec.url),
        "url_hint": url_hint(spec.url),
        "secret_enc": box.encrypt(secret),
        "kinds": spec.kinds,
        "enabled": spec.enabled,
        "created_at": utcnow(),
    }
    try:
        async with engine.begin() as conn:
            result = await conn.execute(alert_webhooks.insert().values(values))
            new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
            row = (
                await conn.execute(select(alert_webhooks).where(alert_webhooks.c.id == new_id))
            ).one()
    except IntegrityError:
        raise Invalid(f"name: a webhook named {spec.name!r} exists already") from None
    return CreatedWebhook(info=_info(row), secret=secret)


async def list_webhooks(engine: AsyncEngine) -> list[WebhookInfo]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(alert_webhooks).order_by(alert_webhooks.c.id))).all()
    return [_info(r) for r in rows]


async def update_webhook(engine: AsyncEngine, webhook_id: int, data: Any) -> WebhookInfo:
    changes: WebhookUpdate = _parse(WebhookUpdate, data)
    values = {name: getattr(changes, name) for name in changes.model_fields_set}
    if "kinds" in values and values["kinds"] == []:
        raise Invalid("kinds: at least one kind, or null for all")
    async with engine.begin() as conn:
        if values:
            await conn.execute(
                update(alert_webhooks).where(alert_webhooks.c.id == webhook_id).values(values)
            )
        row = (
            await conn.execute(select(alert_webhooks).where(alert_webhooks.c.id == webhook_id))
        ).first()
    if row is None:
        raise NotFound(f"no webhook with id {webhook_id}")
    return _info(row)


async def delete_webhook(engine: AsyncEngine, webhook_id: int) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(delete(alert_webhooks).where(alert_webhooks.c.id == webhook_id))
    if not result.rowcount:
        raise NotFound(f"no webhook with id {webhook_id}")


class Target(BaseModel):
    """A webhook ready to send to (decrypted): only the delivery code holds these."""

    id: int
    name: str
    url: str
    secret: str
    kinds: list[str] | None


async def targets(
    engine: AsyncEngine, box: SecretBox, webhook_id: int | None = None
) -> list[Target]:
    stmt = select(alert_webhooks)
    if webhook_id is None:
        stmt = stmt.where(alert_webhooks.c.enabled.is_(True))
    else:
        stmt = stmt.where(alert_webhooks.c.id == webhook_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.order_by(alert_webhooks.c.id))).all()
    if webhook_id is not None and not rows:
        raise NotFound(f"no webhook with id {webhook_id}")
    return [
        Target(
            id=r.id,
            name=r.name,
            url=box.decrypt(r.url_enc),
            secret=box.decrypt(r.secret_enc),
            kinds=r.kinds,
        )
        for r in rows
    ]


async def recent_alerts(engine: AsyncEngine, limit: int = 50) -> list[AlertInfo]:
    if not 1 <= limit <= 1000:
        raise Invalid("limit must be between 1 and 1000")
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(alert_events).order_by(alert_events.c.id.desc()).limit(limit))
        ).all()
    return [
        AlertInfo(
            id=r.id,
            kind=r.kind,
            subject=r.subject,
            period=r.period,
            text=r.text,
            fields=r.fields,
            created_at=as_utc(r.created_at),
            resolved_at=as_utc(r.resolved_at),
            delivered=r.delivered,
            failed=r.failed,
            last_error=r.last_error,
        )
        for r in rows
    ]
