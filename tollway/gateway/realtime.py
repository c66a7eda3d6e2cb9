"""`/v1/realtime`: a WebSocket session passed through to an upstream that serves the model.

The client authenticates with its Tollway key (`Authorization: Bearer`, or the subprotocol
`openai-insecure-api-key.<key>` that browser SDKs send); the upstream gets its own key. The
open session holds one of the key's `max_parallel` slots and counts as one request; usage is
summed from the `response.done` events and recorded (one row) when the session ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from tollway.core.errors import GatewayError, model_not_allowed, model_not_found, no_upstream
from tollway.core.ids import new_request_id
from tollway.core.types import KeyRecord, UsageEvent
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

from .asgi import Headers, Receive, Scope, Send, header
from .auth import KeyCache
from .limits import Limiter
from .sse import normalize_usage
from .usage import UsageSink

if TYPE_CHECKING:  # websockets is imported by the first session, not at start-up
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("tollway.realtime")
PATH = "/v1/realtime"
KEY_PROTOCOL = "openai-insecure-api-key."
# Client headers the upstream gets besides our own: what selects the API's behaviour.
PASSED = (b"openai-beta",)
# Close codes: 1008 policy violation (refused: auth, limits, model), 1011 upstream trouble.
REFUSED, UPSTREAM_FAILED = 1008, 1011


def _protocols(headers: Headers) -> list[str]:
    value = header(headers, b"sec-websocket-protocol")
    if value is None:
        return []
    return [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]


def _auth_headers(headers: Headers, protocols: list[str]) -> Headers:
    """The key from the subprotocol, as an Authorization header, when none was sent."""
    if header(headers, b"authorization") is not None:
        return headers
    for p in protocols:
        if p.startswith(KEY_PROTOCOL):
            return [*headers, (b"authorization", b"Bearer " + p[len(KEY_PROTOCOL) :].encode())]
    return headers


def _ws_url(up: Upstream, query: bytes) -> str:
    base = up.base_url
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/realtime" + ("?" + query.decode("latin-1") if query else "")


class Realtime:
    def __init__(
        self,
        keys: KeyCache,
        pool: Pool,
        limiter: Limiter,
        sink: UsageSink,
        price: Callable[[UsageEvent], float | None] | None,
        connect_timeout: float,
    ) -> None:
        self.keys = keys
        self.pool = pool
        self.limiter = limiter
        self.sink = sink
        self.price = price
        self.connect_timeout = connect_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        await receive()  # websocket.connect
        headers: Headers = scope["headers"]
        protocols = _protocols(headers)
        event: UsageEvent | None = None
        try:
            key = await self.keys.authenticate(_auth_headers(headers, protocols), scope["client"])
            event = UsageEvent(time.time(), request_id, key.id, "GET", PATH)
            await self._session(scope, receive, send, key, event, protocols, request_id)
        except GatewayError as exc:
            if event is not None:
                event.status, event.error_type = exc.status, exc.code or exc.type
            # Before the accept this is an HTTP 403 with the reason in the log only.
            await send({"type": "websocket.close", "code": REFUSED, "reason": exc.message[:120]})
        finally:
            if event is not None:
                event.latency_ms = (time.perf_counter() - started) * 1000.0
                self.sink.emit(event)

    async def _session(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: KeyRecord,
        event: UsageEvent,
        protocols: list[str],
        request_id: str,
    ) -> None:
        query: bytes = scope.get("query_string", b"")
        model = next((v for k, v in _query(query) if k == "model"), None)
        if not model:
            raise GatewayError(400, "`model` is required in the query.", param="model")
        event.model = model
        if key.models is not None and model not in key.models:
            raise model_not_allowed(model)
        if not self.pool.knows(model):
            raise model_not_found(model)
        admission = await self.limiter.admit(key, model)
        try:
            upstream, up = await self._open(scope["headers"], model, query, request_id)
            event.upstream, event.upstream_model = up.name, up.upstream_model(model)
            event.attempts = 1
            chosen = "realtime" if "realtime" in protocols else None
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": chosen,
                    "headers": [(b"x-request-id", request_id.encode()), *admission.headers],
                }
            )
            event.status = 101
            up.in_flight += 1
            try:
                await self._relay(receive, send, upstream, event)
            finally:
                up.in_flight -= 1
                await upstream.close()
        finally:
            if self.price is not None and event.total_tokens is not None:
                event.cost_usd = self.price(event)
            self.pool.on_usage(event.upstream, event.total_tokens, event.cost_usd)
            await self.limiter.settle(key, admission, event.total_tokens, event.cost_usd)

    async def _open(
        self, headers: Headers, model: str, query: bytes, request_id: str
    ) -> tuple[ClientConnection, Upstream]:
        """The first upstream of the model that accepts the connection."""
        import websockets
        from websockets.asyncio.client import connect

        candidates = self.pool.candidates(model)
        if not candidates:
            raise no_upstream()
        extra = {n.decode(): v.decode("latin-1") for n, v in headers if n in PASSED}
        for up in candidates:
            auth = {"Authorization": f"Bearer {up.api_key}"} if up.api_key else {}
            try:
                ws = await connect(
                    _ws_url(up, query),
                    additional_headers={**extra, **up.headers, **auth, "x-request-id": request_id},
                    open_timeout=self.connect_timeout,
                    max_size=None,
                    compression=None,
                    user_agent_header=None,
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                log.warning("realtime upstream %s refused: %s", up.name, type(exc).__name__)
                self.pool.on_failure(up, reason="realtime connect failed")
                continue
            return ws, up
        raise GatewayError(
            502,
            "No upstream accepted the realtime session.",
            "upstream_error",
            "upstream_unreachable",
        )

    async def _relay(
        self, receive: Receive, send: Send, upstream: ClientConnection, event: UsageEvent
    ) -> None:
        """Both directions until either side closes; then the other is closed too."""
        import websockets

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")

        async def upstream_to_client() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for data in upstream:
                    if isinstance(data, str):
                        if '"response.done"' in data:
                            _add_usage(event, data)
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            with contextlib.suppress(Exception):  # the client may be gone already
                await send({"type": "websocket.close", "code": upstream.close_code or 1000})

        tasks = [
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, websockets.ConnectionClosed):
                event.error_type = "realtime_relay_error"
                log.warning("realtime session ended by %s", type(exc).__name__)


def _query(query: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query.decode("latin-1"))


def _add_usage(event: UsageEvent, data: str) -> None:
    """Add one `response.done` event's usage to the session's totals."""
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(obj, dict) or obj.get("type") != "response.done":
        return
    response = obj.get("response")
    usage = normalize_usage(response.get("usage")) if isinstance(response, dict) else None
    if usage is None:
        return
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
        if name in usage:
            setattr(event, name, (getattr(event, name) or 0) + usage[name])
