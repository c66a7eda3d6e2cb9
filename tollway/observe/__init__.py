"""Metrics, request log and traces: each fed from the usage sink's observer hook (a loop turn's
events at a time, after their responses went out), each imported only when it is turned on."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

from tollway.core.errors import error_body
from tollway.core.settings import Settings
from tollway.gateway.asgi import Scope, Send, header
from tollway.gateway.usage import UsageSink
from tollway.upstreams.pool import Pool

if TYPE_CHECKING:
    from .metrics import Metrics
    from .request_log import RequestLog
    from .tracing import Tracing

log = logging.getLogger("tollway.observe")
REFRESH_SECONDS = 1.0  # gauges and pool/sink counters are read this often


class Observability:
    def __init__(self, settings: Settings, pool: Pool, sink: UsageSink, refusals: Any) -> None:
        s = settings
        self.metrics: Metrics | None = None
        self.request_log: RequestLog | None = None
        self.tracing: Tracing | None = None
        self._token = s.metrics_token.get_secret_value().encode() if s.metrics_token else None
        self._task: asyncio.Task[None] | None = None
        if self._token is not None:
            from .metrics import Metrics

            self.metrics = Metrics(pool, sink, refusals)
        if s.request_log:
            from .request_log import RequestLog

            self.request_log = RequestLog(s.log_format, s.request_log_level)
            sink.add_observer(self.request_log.observe)
        if s.otel_enabled:
            from .tracing import Tracing

            self.tracing = Tracing(pool, s.otel_endpoint, s.otel_service_name, s.otel_sample_ratio)
            sink.add_observer(self.tracing.observe)

    def start(self) -> None:
        if self.metrics is not None:
            self._task = asyncio.get_running_loop().create_task(self._refresh(self.metrics))

    async def _refresh(self, metrics: Metrics) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                metrics.refresh()
            except Exception:
                log.exception("metrics refresh failed")

    async def close(self) -> None:
        """After the usage sink stopped (its last events are observed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.metrics is not None:
            self.metrics.refresh()
            self.metrics.close()
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.close)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.close)

    async def serve_metrics(self, scope: Scope, send: Send) -> bool:
        """`GET /metrics` with `Authorization: Bearer <TOLLWAY_METRICS_TOKEN>`. False when
        metrics are off (the caller answers 404 like any unknown path)."""
        if self.metrics is None or self._token is None:
            return False
        given = header(scope["headers"], b"authorization") or b""
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
            body = error_body(
                "A valid metrics token is required (Authorization: Bearer ...).",
                "invalid_request_error",
                "invalid_metrics_token",
            )
            await _send(send, 401, body, b"application/json", [(b"www-authenticate", b"Bearer")])
            return True
        self.metrics.refresh()  # this process's gauges as of now
        text = await asyncio.to_thread(self.metrics.render)
        await _send(send, 200, text, b"text/plain; version=0.0.4; charset=utf-8", [])
        return True


async def _send(
    send: Send, status: int, body: bytes, kind: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-type", kind), (b"cache-control", b"no-store"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
