"""Where a command's work happens: on the configured database directly (Local), or on a
running Tollway through its admin API (Remote, with --url and the admin secret). Both speak
the service layer's models, so every command prints the same either way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.cli.output import fail
from tollway.core.settings import Settings, get_settings
from tollway.services import alerts, keys, price_table, prices, usage
from tollway.services import upstreams as ups
from tollway.services.alert_delivery import TestResult, send_test
from tollway.services.errors import ServiceError
from tollway.store.db import create_engine, engine_options, is_sqlite

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class RemoteError(ServiceError):
    """The admin API answered with an error (its message is shown as is)."""


class Backend(Protocol):
    async def create_key(self, data: dict[str, Any]) -> keys.CreatedKey: ...
    async def list_keys(self, **query: Any) -> keys.KeyPage: ...
    async def get_key(self, key_id: int) -> keys.KeyInfo: ...
    async def update_key(self, key_id: int, changes: dict[str, Any]) -> keys.KeyInfo: ...
    async def set_enabled(self, key_id: int, enabled: bool) -> keys.KeyInfo: ...
    async def rotate_key(self, key_id: int) -> keys.CreatedKey: ...
    async def delete_key(self, key_id: int) -> None: ...
    async def key_stats(self, key_id: int, **query: Any) -> usage.KeyStats: ...
    async def report(self, **query: Any) -> usage.UsageReport: ...
    async def export_csv(self, **query: Any) -> AsyncIterator[str]: ...
    async def get_record(self, request_id: str) -> usage.RequestDetail: ...
    async def list_webhooks(self) -> list[alerts.WebhookInfo]: ...
    async def add_webhook(self, data: dict[str, Any]) -> alerts.CreatedWebhook: ...
    async def update_webhook(self, webhook_id: int, data: dict[str, Any]) -> alerts.WebhookInfo: ...
    async def remove_webhook(self, webhook_id: int) -> None: ...
    async def test_webhook(self, webhook_id: int) -> TestResult: ...
    async def recent_alerts(self, limit: int) -> list[alerts.AlertInfo]: ...
    async def list_upstreams(self) -> list[ups.UpstreamInfo]: ...
    async def add_upstream(self, data: dict[str, Any]) -> ups.UpstreamInfo: ...
    async def remove_upstream(self, upstream_id: int) -> None: ...
    async def test_upstream(
        self, upstream_id: int, model: str | None
    ) -> ups.UpstreamTestResult: ...
    async def upstream_status(self) -> list[ups.UpstreamStatus]: ...
    async def revoke_sessions(self) -> int: ...
    async def list_prices(self) -> list[prices.PriceInfo]: ...
    async def set_price(self, data: dict[str, Any]) -> prices.PriceInfo: ...
    async def delete_price(self, model: str) -> None: ...
    async def import_prices(
        self, table: price_table.PriceTable | None, overwrite: bool
    ) -> price_table.ImportResult: ...


class Local:
    """Straight to the database through tollway.services."""

    live_status = False  # no running pool here: health/in-flight/latency are not live

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    async def create_key(self, data: dict[str, Any]) -> keys.CreatedKey:
        return await keys.create_key(self.engine, data)

    async def list_keys(self, **query: Any) -> keys.KeyPage:
        return await keys.list_keys(self.engine, **query)

    async def get_key(self, key_id: int) -> keys.KeyInfo:
        return await keys.get_key(self.engine, key_id)

    async def update_key(self, key_id: int, changes: dict[str, Any]) -> keys.KeyInfo:
        return await keys.update_key(self.engine, key_id, changes)

    async def set_enabled(self, key_id: int, enabled: bool) -> keys.KeyInfo:
        return await keys.set_enabled(self.engine, key_id, enabled)

    async def rotate_key(self, key_id: int) -> keys.CreatedKey:
        return await keys.rotate_key(self.engine, key_id)

    async def delete_key(self, key_id: int) -> None:
        await keys.delete_key(self.engine, key_id)

    async def key_stats(self, key_id: int, **query: Any) -> usage.KeyStats:
        return await usage.key_stats(self.engine, key_id, **query)

    async def report(self, **query: Any) -> usage.UsageReport:
        return await usage.report(self.engine, **query)

    async def export_csv(self, **query: Any) -> AsyncIterator[str]:
        return await usage.export_csv(self.engine, **query)

    async def get_record(self, request_id: str) -> usage.RequestDetail:
        return await usage.get_record(self.engine, request_id)

    async def list_webhooks(self) -> list[alerts.WebhookInfo]:
        return await alerts.list_webhooks(self.engine)

    async def add_webhook(self, data: dict[str, Any]) -> alerts.CreatedWebhook:
        return await alerts.create_webhook(self.engine, data, self._box())

    async def update_webhook(self, webhook_id: int, data: dict[str, Any]) -> alerts.WebhookInfo:
        return await alerts.update_webhook(self.engine, webhook_id, data)

    async def remove_webhook(self, webhook_id: int) -> None:
        await alerts.delete_webhook(self.engine, webhook_id)

    async def test_webhook(self, webhook_id: int) -> TestResult:
        wait = self.settings.alert_timeout
        return await send_test(self.engine, self._box(), webhook_id, wait)

    async def recent_alerts(self, limit: int) -> list[alerts.AlertInfo]:
        return await alerts.recent_alerts(self.engine, limit)

    def _box(self) -> Any:
        from tollway.upstreams.crypto import SecretKeyMissing, secret_box

        try:
            return secret_box(self.settings)
        except SecretKeyMissing as exc:
            raise ServiceError(str(exc)) from None

    async def list_upstreams(self) -> list[ups.UpstreamInfo]:
        return await ups.list_upstreams(self.engine)

    async def add_upstream(self, data: dict[str, Any]) -> ups.UpstreamInfo:
        box = self._box() if data.get("api_key") else None
        return await ups.create_upstream(self.engine, data, box)

    async def remove_upstream(self, upstream_id: int) -> None:
        await ups.delete_upstream(self.engine, upstream_id)

    async def test_upstream(self, upstream_id: int, model: str | None) -> ups.UpstreamTestResult:
        await ups.get_upstream(self.engine, upstream_id)  # a clear 404 first
        net = ups.egress_defaults(self.settings)
        return await ups.test_upstream(self.engine, upstream_id, self._box(), model, net=net)

    async def upstream_status(self) -> list[ups.UpstreamStatus]:
        # The pool as a gateway would load it (config file + database), without running one.
        from tollway.upstreams.manager import UpstreamManager
        from tollway.upstreams.pool import Pool

        manager = UpstreamManager(Pool(), self.settings, self.engine)
        await manager.reload_db()
        return await ups.upstream_status(manager.pool)

    async def revoke_sessions(self) -> int:
        from tollway.services import sessions

        return await sessions.revoke_all(self.engine)

    async def list_prices(self) -> list[prices.PriceInfo]:
        return await prices.list_prices(self.engine)

    async def set_price(self, data: dict[str, Any]) -> prices.PriceInfo:
        return await prices.set_price(self.engine, data)

    async def delete_price(self, model: str) -> None:
        await prices.delete_price(self.engine, model)

    async def import_prices(
        self, table: price_table.PriceTable | None, overwrite: bool
    ) -> price_table.ImportResult:
        chosen = table if table is not None else price_table.bundled()
        return await price_table.import_prices(self.engine, chosen, overwrite=overwrite)


def _query(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


class Remote:
    """A running Tollway's admin API (`/admin/api`), authenticated with the admin secret."""

    live_status = True

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if "params" in kw:
            kw["params"] = _query(kw["params"])
        try:
            resp = await self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.client.base_url}: {exc}") from None
        if resp.status_code >= 400:
            raise RemoteError(_message(resp))
        return resp

    async def _get(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate((await self._send(method, path, **kw)).json())

    async def _list(self, model: type[M], method: str, path: str, **kw: Any) -> list[M]:
        data = (await self._send(method, path, **kw)).json()
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]

    async def create_key(self, data: dict[str, Any]) -> keys.CreatedKey:
        body = keys.KeyCreate.model_validate(data).model_dump(mode="json", exclude_unset=True)
        return await self._get(keys.CreatedKey, "POST", "/keys", json=body)

    async def list_keys(self, **query: Any) -> keys.KeyPage:
        return await self._get(keys.KeyPage, "GET", "/keys", params=query)

    async def get_key(self, key_id: int) -> keys.KeyInfo:
        return await self._get(keys.KeyInfo, "GET", f"/keys/{key_id}")

    async def update_key(self, key_id: int, changes: dict[str, Any]) -> keys.KeyInfo:
        body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}
        return await self._get(keys.KeyInfo, "PATCH", f"/keys/{key_id}", json=body)

    async def set_enabled(self, key_id: int, enabled: bool) -> keys.KeyInfo:
        action = "enable" if enabled else "disable"
        return await self._get(keys.KeyInfo, "POST", f"/keys/{key_id}/{action}")

    async def rotate_key(self, key_id: int) -> keys.CreatedKey:
        return await self._get(keys.CreatedKey, "POST", f"/keys/{key_id}/rotate")

    async def delete_key(self, key_id: int) -> None:
        await self._send("DELETE", f"/keys/{key_id}")

    async def key_stats(self, key_id: int, **query: Any) -> usage.KeyStats:
        return await self._get(usage.KeyStats, "GET", f"/keys/{key_id}/stats", params=query)

    async def report(self, **query: Any) -> usage.UsageReport:
        return await self._get(usage.UsageReport, "GET", "/usage", params=query)

    async def export_csv(self, **query: Any) -> AsyncIterator[str]:
        # Errors (bad filters) surface before any output, as with Local.
        request = self.client.build_request("GET", "/usage/export.csv", params=_query(query))
        try:
            resp = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.client.base_url}: {exc}") from None
        if resp.status_code >= 400:
            await resp.aread()
            raise RemoteError(_message(resp))

        async def chunks() -> AsyncIterator[str]:
            try:
                async for text in resp.aiter_text():
                    yield text
            finally:
                await resp.aclose()

        return chunks()

    async def get_record(self, request_id: str) -> usage.RequestDetail:
        path = "/usage/records/" + quote(request_id.strip(), safe="")
        return await self._get(usage.RequestDetail, "GET", path)

    async def list_webhooks(self) -> list[alerts.WebhookInfo]:
        return await self._list(alerts.WebhookInfo, "GET", "/alerts/webhooks")

    async def add_webhook(self, data: dict[str, Any]) -> alerts.CreatedWebhook:
        return await self._get(alerts.CreatedWebhook, "POST", "/alerts/webhooks", json=data)

    async def update_webhook(self, webhook_id: int, data: dict[str, Any]) -> alerts.WebhookInfo:
        path = f"/alerts/webhooks/{webhook_id}"
        return await self._get(alerts.WebhookInfo, "PATCH", path, json=data)

    async def remove_webhook(self, webhook_id: int) -> None:
        await self._send("DELETE", f"/alerts/webhooks/{webhook_id}")

    async def test_webhook(self, webhook_id: int) -> TestResult:
        return await self._get(TestResult, "POST", f"/alerts/webhooks/{webhook_id}/test")

    async def recent_alerts(self, limit: int) -> list[alerts.AlertInfo]:
        return await self._list(alerts.AlertInfo, "GET", "/alerts", params={"limit": limit})

    async def list_upstreams(self) -> list[ups.UpstreamInfo]:
        return await self._list(ups.UpstreamInfo, "GET", "/upstreams")

    async def add_upstream(self, data: dict[str, Any]) -> ups.UpstreamInfo:
        return await self._get(ups.UpstreamInfo, "POST", "/upstreams", json=data)

    async def remove_upstream(self, upstream_id: int) -> None:
        await self._send("DELETE", f"/upstreams/{upstream_id}")

    async def test_upstream(self, upstream_id: int, model: str | None) -> ups.UpstreamTestResult:
        return await self._get(
            ups.UpstreamTestResult,
            "POST",
            f"/upstreams/{upstream_id}/test",
            params={"model": model},
        )

    async def upstream_status(self) -> list[ups.UpstreamStatus]:
        return await self._list(ups.UpstreamStatus, "GET", "/upstreams/status")

    async def revoke_sessions(self) -> int:
        data = (await self._send("POST", "/sessions/revoke")).json()
        return int(data["generation"])

    async def list_prices(self) -> list[prices.PriceInfo]:
        return await self._list(prices.PriceInfo, "GET", "/prices")

    async def set_price(self, data: dict[str, Any]) -> prices.PriceInfo:
        return await self._get(prices.PriceInfo, "POST", "/prices", json=data)

    async def delete_price(self, model: str) -> None:
        await self._send("DELETE", f"/prices/{quote(model, safe='/')}")

    async def import_prices(
        self, table: price_table.PriceTable | None, overwrite: bool
    ) -> price_table.ImportResult:
        body: dict[str, Any] = {"overwrite": overwrite}
        if table is None:
            body["bundled"] = True
        else:
            body["table"] = table.model_dump(mode="json")
        return await self._get(price_table.ImportResult, "POST", "/prices/import", json=body)


def _message(resp: httpx.Response) -> str:
    try:
        message = str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200] or resp.reason_phrase
    if resp.status_code == 401:
        return f"the admin secret was refused ({message})"
    return message


# --- running a command's work -----------------------------------------------------------------


def sqlite_file(url: str) -> Path | None:
    db = make_url(url).database if is_sqlite(url) else None
    return Path(db) if db and db != ":memory:" else None


@asynccontextmanager
async def _local(creating: bool) -> AsyncIterator[Backend]:
    settings = get_settings()
    path = sqlite_file(settings.database_url)
    if path is not None and not creating and not path.exists():
        # Opening would silently create an empty file; point at `init` instead.
        raise ServiceError(f"no database at {path.resolve()}; run `tollway init` first")
    engine = create_engine(settings.database_url, **engine_options(settings))
    try:
        yield Local(engine, settings)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _remote(url: str, secret: str | None) -> AsyncIterator[Backend]:
    if not secret:
        raise ServiceError("--url needs the admin secret: --admin-secret or TOLLWAY_ADMIN_SECRET")
    base = url.rstrip("/")
    if not base.endswith("/admin/api"):
        base += "/admin/api"
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        yield Remote(client)


def run(
    url: str | None,
    secret: str | None,
    work: Callable[[Backend], Awaitable[T]],
) -> T:
    """Run one command's work on the right backend; errors become a message and exit 1."""

    async def main() -> T:
        ctx = _remote(url, secret) if url else _local(creating=False)
        async with ctx as backend:
            return await work(backend)

    return _guarded(main)


def run_local(work: Callable[[Local], Awaitable[T]], *, creating: bool = False) -> T:
    """For database-only commands (init): `creating` allows a new SQLite file."""

    async def main() -> T:
        async with _local(creating) as backend:
            assert isinstance(backend, Local)
            return await work(backend)

    return _guarded(main)


def _guarded(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except ServiceError as exc:
        raise fail(exc.message) from None
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise fail(f"database error: {reason} (has `tollway init` been run?)") from None
