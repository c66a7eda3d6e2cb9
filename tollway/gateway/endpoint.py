"""The `/v1/*` endpoint: auth → limits → router → relay → usage event. Raw ASGI, no
framework objects per request: this is the hot path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import quote

import orjson

from tollway.core.errors import GatewayError, model_not_allowed, model_not_found, no_upstream
from tollway.core.ids import new_request_id
from tollway.core.types import KeyRecord, UsageEvent
from tollway.upstreams.pool import Pool

from .apis import OPENAI, Api, Tracker, for_request, prepare
from .asgi import Headers, Message, Receive, Scope, Send, header, read_body, send_bytes, send_error
from .auth import KeyCache
from .body import RequestInfo, inspect
from .body_budget import BodyBudget
from .cache import CachePlan, ResponseCache
from .client_link import CANCEL_MESSAGE, GONE, TASK, uncancel
from .error_text import error_message
from .guard import shutting_down, unexpected
from .limits import Admission, Limiter
from .paths import has_dot_segment, invalid_path
from .relay import DROP_RESPONSE, Attempt, Relay
from .upstream_http import UpstreamError, UpstreamResponse
from .usage import UsageSink

PriceFn = Callable[[UsageEvent], float | None]
SSE_TYPE = b"text/event-stream"
JSON_TYPE = b"application/json"
# An encoding the client could not undo (br, zstd...) passes through with its header.
DROP_ENCODED = DROP_RESPONSE - {b"content-encoding"}


def _usage_into(event: UsageEvent, usage: dict[str, int] | None) -> None:
    if usage is None:
        return
    event.prompt_tokens = usage.get("prompt_tokens")
    event.completion_tokens = usage.get("completion_tokens")
    event.total_tokens = usage.get("total_tokens")
    event.cached_tokens = usage.get("cached_tokens")
    event.cache_write_tokens = usage.get("cache_write_tokens")
    event.reasoning_tokens = usage.get("reasoning_tokens")


def _upstream_path(scope: Scope) -> bytes:
    """What follows the upstream's base URL: the raw path after `/v1`, and the query."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    path = raw[3:] if raw.startswith(b"/v1/") else quote(scope["path"][3:]).encode()
    query: bytes = scope.get("query_string", b"")
    return path + b"?" + query if query else path


class Gateway:
    def __init__(
        self,
        keys: KeyCache,
        pool: Pool,
        relay: Relay,
        limiter: Limiter,
        sink: UsageSink,
        max_body_bytes: int,
        price: PriceFn | None = None,
        bodies: BodyBudget | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.keys = keys
        self.pool = pool
        self.relay = relay
        self.limiter = limiter
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.price = price
        self.cache = cache  # None: the response cache is off (TOLLWAY_CACHE_TTL=0)
        self.open = 0  # requests in progress: shutdown waits for their usage events
        # Requests refused before a key was known (no usage event), by code: for metrics.
        self.refused: dict[str, int] = {}
        # Request-body bytes held at once in this process (a body larger than all of it: 413).
        self.bodies = bodies if bodies is not None else BodyBudget(4 * max_body_bytes)
        self.body_limit = min(max_body_bytes, self.bodies.capacity)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        base: Headers = [(b"x-request-id", request_id.encode())]
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        api = for_request(scope["path"], scope["headers"])
        if (b"." in raw or b"%" in raw or b"\\" in raw) and has_dot_segment(raw):
            await send_error(send, invalid_path(), base, api.error_body)  # before auth
            return
        event: UsageEvent | None = None
        sent = [False]  # whether the response has started; failover stops there

        async def tracked_send(message: Message) -> None:
            sent[0] = True
            await send(message)

        self.open += 1
        try:
            key = await self.keys.authenticate(scope["headers"], scope.get("client"))
            method: str = scope["method"]
            path: str = scope["path"]
            event = UsageEvent(time.time(), request_id, key.id, method, path)
            if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                unknown = await self._models(tracked_send, key, path, base, api)
                if unknown is None:
                    event.status = 200
                    return
                # Not listed, but an upstream serving every model may know it: ask it.
                await self._proxy(scope, receive, tracked_send, key, event, base, api, unknown)
                return
            await self._proxy(scope, receive, tracked_send, key, event, base, api)
        except GatewayError as exc:
            if event is not None:
                event.status = exc.status
                event.error_type = exc.code or exc.type
                event.error_message = exc.message
            else:
                code = exc.code or exc.type
                self.refused[code] = self.refused.get(code, 0) + 1
            if not sent[0]:
                await send_error(send, exc, base, api.error_body)
        except asyncio.CancelledError:
            # The client left (the protocol cancelled us), or shutdown's drain time is over.
            uncancel()
            gone = GONE in scope
            if event is not None:
                _cancelled(event, gone, sent[0])
            if not gone and not sent[0]:
                await send_error(send, shutting_down(), base, api.error_body)
        except Exception as exc:  # the outermost guard: never uvicorn's plain-text 500
            error = unexpected(exc, request_id)
            if event is not None:
                event.error_type = error.code
                if not sent[0]:
                    event.status = error.status
            if not sent[0]:
                await send_error(send, error, base, api.error_body)
        finally:
            self.open -= 1
            if event is not None:
                event.latency_ms = (time.perf_counter() - started) * 1000.0
                if event.admitted_ms is not None:  # perf_counter marks → ms since the start
                    event.admitted_ms = (event.admitted_ms - started) * 1000.0
                    if event.first_byte_ms is not None:
                        event.first_byte_ms = (event.first_byte_ms - started) * 1000.0
                self.sink.emit(event)

    async def _models(
        self, send: Send, key: KeyRecord, path: str, base: Headers, api: Api
    ) -> str | None:
        """Answer the listing, or one listed model, locally. Returns the id of a model that
        is not listed but that an upstream serving every model may know (the caller relays
        the request to it); 404 when none could."""
        allowed = key.models
        names = [m for m in self.pool.models() if allowed is None or m in allowed]
        if api is not OPENAI:  # Anthropic's list shape (Claude Code's model discovery)
            body = anthropic_models(names, path)
        elif path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "tollway"} for m in names
            ]
            body = orjson.dumps({"object": "list", "data": data})
        else:
            model = path[len("/v1/models/") :]
            if model not in names:
                if model and (allowed is None or model in allowed) and self.pool.serving(model):
                    return model
                raise model_not_found(model)
            body = orjson.dumps(
                {"id": model, "object": "model", "created": 0, "owned_by": "tollway"}
            )
        await send_bytes(send, 200, body, base, b"application/json")
        return None

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: KeyRecord,
        event: UsageEvent,
        base: Headers,
        api: Api,
        model: str | None = None,
    ) -> None:
        body = await read_body(receive, self.body_limit, self.bodies, scope["headers"])
        try:
            await self._forward(scope, receive, send, key, event, base, body, api, model)
        finally:
            self.bodies.release(len(body))  # every way out: answered, refused, failed, gone

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: KeyRecord,
        event: UsageEvent,
        base: Headers,
        body: bytes,
        api: Api,
        path_model: str | None = None,
    ) -> None:
        headers: Headers = scope["headers"]
        info = inspect(event.endpoint, header(headers, b"content-type"), body)
        if path_model is not None:  # GET /v1/models/{id}: the model is in the path
            info.model = path_model
        model = info.model
        event.model = model
        event.stream = info.stream
        if model is not None:
            if key.models is not None and model not in key.models:
                raise model_not_allowed(model)
            if not self.pool.knows(model):
                raise model_not_found(model)
        if self.cache is not None and info.is_json:
            info.cache = self.cache.plan(key, headers, event.endpoint, info.parsed)
        candidates = self.pool.candidates(model)
        if api is not OPENAI or self.pool.mixed_apis:  # which upstreams speak it, translation
            candidates = prepare(api, info, event.endpoint, self.pool, candidates)
        if not candidates and not self.pool.fallbacks(model):
            raise no_upstream(
                "No upstream serves requests without a model (files, batches...)."
                if model is None
                else "No upstream is available for this model."
            )
        admission = await self.limiter.admit(key, model)
        event.admitted_ms = time.perf_counter()  # made relative in __call__
        try:
            # From here the protocol cancels this task when the client leaves (client_link).
            scope[TASK] = asyncio.current_task()
            if GONE in scope:  # it left while the body was read or the limits checked
                raise asyncio.CancelledError(CANCEL_MESSAGE)
            if info.cache is not None and await self._from_cache(
                send, info.cache, event, [*base, *admission.headers]
            ):
                return
            attempt = await self.relay.send(
                event.method.encode(),
                _upstream_path(scope),
                headers,
                body,
                info,
                candidates,
                event.request_id,
                key.models,
                event,
            )
            event.first_byte_ms = time.perf_counter()  # the response head is in
            event.attempts = attempt.attempts
            event.upstream = attempt.upstream.name
            if attempt.model != model:  # served by a fallback model
                event.fallback_from, event.model = model, attempt.model
            event.upstream_model = (
                attempt.upstream.upstream_model(attempt.model)
                if attempt.model is not None
                else None
            )
            if info.cache is not None:
                base = [*base, (b"x-tollway-cache", b"miss")]
            await self._respond(scope, send, attempt, info, event, base, admission, api)
        finally:
            scope[TASK] = None  # settling is not interrupted by a late disconnect
            if self.price is not None and event.total_tokens is not None:
                event.cost_usd = self.price(event)
            self.pool.on_usage(event.upstream, event.total_tokens, event.cost_usd)
            await self.limiter.settle(key, admission, event.total_tokens, event.cost_usd)

    async def _respond(
        self,
        scope: Scope,
        send: Send,
        attempt: Attempt,
        info: RequestInfo,
        event: UsageEvent,
        base: Headers,
        admission: Admission,
        api: Api,
    ) -> None:
        response = attempt.response
        up = attempt.upstream
        translated = info.foreign is not None and info.api not in up.apis
        event.status = response.status
        drop = DROP_ENCODED if response.content_encoding and not response.decoded else DROP_RESPONSE
        out: Headers = [(k, v) for k, v in response.headers if k not in drop]
        out.extend(base)
        out.extend(admission.headers)
        content_type = (response.header(b"content-type") or b"").lower()
        try:
            if content_type.startswith(SSE_TYPE):
                self.pool.on_success(
                    up, (time.perf_counter() - attempt.started) * 1000.0, attempt.model
                )
                tracker = (
                    api.foreign_stream(info.client_wants_usage, event.model)
                    if translated
                    else api.tracker(info.inject_usage)
                )
                await self._stream(scope, send, attempt, event, out, tracker, api, info)
            elif content_type.startswith(JSON_TYPE) or response.status >= 400:
                payload = await response.read()
                if response.status < 400:
                    self.pool.on_success(
                        up, (time.perf_counter() - attempt.started) * 1000.0, attempt.model
                    )
                    if translated:
                        _usage_into(event, api.foreign_usage(payload))
                        payload = api.foreign_json(payload)
                    else:
                        _usage_into(event, api.usage(payload))
                else:
                    event.error_type = "upstream_error"
                    if up.api_key and up.api_key.encode() in payload:
                        payload = payload.replace(up.api_key.encode(), b"***")
                    event.error_message = error_message(payload)
                    if translated:
                        payload = api.foreign_error(response.status, payload)
                await send_bytes(send, response.status, payload, out)
                if info.cache is not None and response.status == 200 and self.cache is not None:
                    await self.cache.put(info.cache, content_type, payload)
            else:
                self.pool.on_success(
                    up, (time.perf_counter() - attempt.started) * 1000.0, attempt.model
                )
                await self._passthrough(send, response, out)
        except TimeoutError as exc:
            # Idle while reading a non-streamed answer: nothing sent yet, so say so cleanly.
            self.pool.on_failure(up, reason="timeout")
            raise GatewayError(
                504,
                "The upstream stopped sending its answer.",
                "timeout_error",
                "upstream_idle_timeout",
            ) from exc
        except UpstreamError as exc:
            self.pool.on_failure(up)
            raise GatewayError(
                502, "The upstream connection failed mid-response.", "upstream_error"
            ) from exc
        finally:
            up.in_flight -= 1
            response.release()

    async def _passthrough(self, send: Send, response: UpstreamResponse, out: Headers) -> None:
        """Binary answers (speech audio, file content) stream through untouched."""
        length = response.header(b"content-length")
        if length is not None and not response.decoded:
            out.append((b"content-length", length))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        async for chunk in response.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(
        self,
        scope: Scope,
        send: Send,
        attempt: Attempt,
        event: UsageEvent,
        out: Headers,
        tracker: Tracker,
        api: Api,
        info: RequestInfo,
    ) -> None:
        response = attempt.response
        began = time.perf_counter()
        first = True
        kept: list[bytes] | None = [] if info.cache is not None else None  # for the cache
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            try:
                async for chunk in response.chunks():
                    data = tracker.feed(chunk)
                    if data:
                        if first:
                            event.ttft_ms = (time.perf_counter() - began) * 1000.0
                            first = False
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                        if kept is not None:
                            kept.append(data)
                rest = tracker.tail()
            except TimeoutError:
                event.error_type = "upstream_idle_timeout"
                event.error_message = "The upstream stopped sending the stream."
                self.pool.on_failure(attempt.upstream, reason="timeout")
                rest = api.stream_error(event.error_message, "timeout_error", event.error_type)
            except UpstreamError:
                event.error_type = "upstream_stream_error"
                event.error_message = "The upstream stream failed before it was complete."
                self.pool.on_failure(attempt.upstream)
                rest = api.stream_error(event.error_message, "upstream_error", event.error_type)
            except asyncio.CancelledError:
                if GONE in scope:
                    raise  # the client left: nobody to tell; the caller records it
                uncancel()  # shutdown's drain time is over: say so, then end the stream
                error = shutting_down()
                event.error_type = error.code
                rest = api.stream_error(error.message, error.type, error.code)
            if not tracker.saw_done and tracker.usage is None and event.error_type is None:
                event.error_type = "upstream_stream_incomplete"
            await send({"type": "http.response.body", "body": rest, "more_body": False})
            if kept is not None and tracker.saw_done and event.error_type is None:
                kept.append(rest)
                await self._keep_stream(info, kept)
        finally:
            if tracker.usage is not None:
                _usage_into(event, tracker.usage)
            elif tracker.content_chunks:
                # The stream ended before its usage chunk: count what was relayed.
                event.completion_tokens = tracker.content_chunks
                event.total_tokens = tracker.content_chunks

    async def _from_cache(
        self, send: Send, plan: CachePlan, event: UsageEvent, base: Headers
    ) -> bool:
        """Answer from the cache when it holds this request: no upstream, zero cost, no
        tokens (a hit counts against request limits, not token budgets)."""
        assert self.cache is not None
        hit = await self.cache.get(plan)
        if hit is None:
            return False
        event.cache_hit = True
        event.status = 200
        event.cost_usd = 0.0
        out = [*base, (b"x-tollway-cache", b"hit")]
        await send_bytes(send, 200, hit.body, out, hit.content_type)
        return True

    async def _keep_stream(self, info: RequestInfo, kept: list[bytes]) -> None:
        assert self.cache is not None and info.cache is not None
        if sum(len(part) for part in kept) <= self.cache.max_entry_bytes:
            await self.cache.put(info.cache, b"text/event-stream", b"".join(kept))


def _cancelled(event: UsageEvent, client_gone: bool, sent: bool) -> None:
    """Record a cancelled request: 499 (nginx's "client closed request") when the client left
    before the response began, else the status it got; 503 when shutdown ended it unanswered."""
    if client_gone:
        event.error_type = "client_disconnected"
        if not sent:
            event.status = 499
    else:
        event.error_type = "server_shutting_down"
        if not sent:
            event.status = 503


def anthropic_models(names: list[str], path: str) -> bytes:
    """Anthropic's `GET /v1/models` list, or one model for `/v1/models/{id}`."""

    def one(model: str) -> dict[str, str]:
        return {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": "1970-01-01T00:00:00Z",
        }

    if path == "/v1/models":
        return orjson.dumps(
            {
                "data": [one(m) for m in names],
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        )
    model = path[len("/v1/models/") :]
    if model not in names:
        raise model_not_found(model)
    return orjson.dumps(one(model))
