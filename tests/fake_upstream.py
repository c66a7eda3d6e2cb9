"""A fake OpenAI-compatible upstream: a real aiohttp server on 127.0.0.1 in its own thread.

Tests switch its behaviour at run time (healthy, slow, 500, 429, down, ...) and read back
every request it received."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

SPEECH_BYTES = bytes(range(256)) * 64  # a "binary audio" body with every byte value

# A test's own answer: gets the request and its raw body (after the key check), returns the
# response, so a test controls every byte, header and write of what the gateway receives.
Responder = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Behaviour:
    mode: str = "ok"  # ok | error | rate_limited | reject_key | no_credit | slow | break_stream
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0  # before answering
    chunk_delay: float = 0.0  # between stream chunks
    chunks: int = 5
    prompt_tokens: int = 11
    reply: str = "Hello from upstream"
    balance: float | None = 100.0  # what /v1/credits (Vercel) and /v1/key (OpenRouter) report
    respond: Responder | None = None  # when set, answers every authorised request


class FakeUpstream:
    def __init__(
        self,
        name: str = "fake",
        api_key: str = "sk-upstream-SECRET-0001",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.tls = tls  # serve https (still bound to 127.0.0.1; its URL names "localhost")
        self.extra_keys: set[str] = set()  # more keys it accepts (several keys, one account)
        self.models = [f"{name}-model"]  # what its own GET /v1/models lists
        self.behaviour = Behaviour()
        # Scripted answers: a request whose raw body contains the marker gets (status, body)
        # (a dict is sent as JSON, bytes as they are). b"" matches every request.
        self.scripted: dict[bytes, tuple[int, Any]] = {}
        self.seen: list[Seen] = []
        self.port = 0
        self.stream_finished = threading.Event()
        self.cancelled = threading.Event()
        # Requests whose connection the client (the gateway) closed before the answer was
        # sent (while `delay` ran), and streams cut by it: what a cancellation looks like here.
        self.abandoned = 0
        self.streams_cut = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}/v1"
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls)
            loop.run_until_complete(site.start())
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.scripted.clear()
        self.seen.clear()
        self.stream_finished.clear()
        self.cancelled.clear()
        self.abandoned = 0
        self.streams_cut = 0

    # -- protocol -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, Any] = {}
        if request.content_type == "multipart/form-data":
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    form["file_size"] = len(value.file.read())
                else:
                    form[name] = value
            body = orjson.dumps(form)
        else:
            body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.query_string,
                CIMultiDict(request.headers),
                body,
            )
        )
        b = self.behaviour
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}" and auth[7:] not in self.extra_keys:
            message = f"Incorrect API key provided: {request.headers.get('Authorization')}"
            return _error(401, message, code="invalid_api_key")  # as OpenAI says it
        for marker, (status, answer) in self.scripted.items():
            if marker in body:
                if isinstance(answer, bytes):
                    return web.Response(status=status, body=answer)
                return web.json_response(answer, status=status, dumps=_dumps)
        if b.respond is not None:
            return await b.respond(request, body)
        if request.method == "GET" and request.path in ("/v1/credits", "/v1/key"):
            return self._balance(request.path)
        if request.method == "GET" and request.path == "/v1/models" and b.mode == "ok":
            data = [{"id": m, "object": "model", "owned_by": self.name} for m in self.models]
            return web.json_response({"object": "list", "data": data}, dumps=_dumps)
        if request.method == "GET" and request.path.startswith("/v1/models/") and b.mode == "ok":
            model = request.path[len("/v1/models/") :]
            if model not in self.models:
                return _error(404, f"The model `{model}` does not exist", code="model_not_found")
            answer = {"id": model, "object": "model", "created": 1, "owned_by": self.name}
            return web.json_response(answer, dumps=_dumps)
        if b.delay and await self._abandoned_while_waiting(request, b.delay):
            return web.Response(status=499)  # nobody reads it: the connection is closed
        if b.mode == "error":
            return _error(b.status, "upstream exploded", "server_error")
        if b.mode == "rate_limited":
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return _error(429, "Rate limit reached", "rate_limit_error", headers)
        if b.mode == "no_credit":  # OpenAI's answer for an account without credit
            message = "You exceeded your current quota, please check your plan and billing."
            return _error(429, message, "insufficient_quota", code="insufficient_quota")
        if b.mode == "reject_key":
            message = f"Incorrect API key provided: {self.api_key}"
            return _error(401, message, code="invalid_api_key")
        path = request.path
        if path == "/v1/chat/completions" or path == "/v1/completions":
            data = orjson.loads(body)
            if data.get("stream"):
                return await self._stream(request, data)
            return web.json_response(self._completion(data, path), dumps=_dumps)
        if path == "/v1/embeddings":
            data = orjson.loads(body)
            return web.json_response(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                    "model": data.get("model"),
                    "usage": {"prompt_tokens": 4, "total_tokens": 4},
                },
                dumps=_dumps,
            )
        if path == "/v1/audio/transcriptions":
            return web.json_response(
                {"text": f"{form.get('model')}:{form.get('file_size')}"}, dumps=_dumps
            )
        if path == "/v1/audio/speech":
            return web.Response(body=SPEECH_BYTES, content_type="audio/mpeg")
        if path.startswith("/v1/files/") and path.endswith("/content"):
            return web.Response(body=SPEECH_BYTES, content_type="application/octet-stream")
        # Everything else: echo what arrived, so tests can check pass-through.
        return web.json_response(
            {
                "echo": True,
                "upstream": self.name,
                "method": request.method,
                "path": path,
                "query": request.query_string,
                "body": body.decode("utf-8", "replace"),
            },
            dumps=_dumps,
        )

    async def _abandoned_while_waiting(self, request: web.Request, delay: float) -> bool:
        """Wait `delay` seconds before answering, watching the connection: True (and counted)
        when the client closed it meanwhile."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.abandoned += 1
                return True
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return False

    def _balance(self, path: str) -> web.Response:
        """Vercel AI Gateway's GET /v1/credits, or OpenRouter's GET /api/v1/key."""
        balance = self.behaviour.balance
        if path == "/v1/credits":
            return web.json_response(
                {"balance": f"{balance or 0:.2f}", "total_used": "4.50"}, dumps=_dumps
            )
        data = {
            "label": "sk-or-v1-abc...xyz",
            "limit": None if balance is None else balance + 25.5,
            "limit_remaining": balance,
            "limit_reset": None,
            "usage": 25.5,
            "is_free_tier": False,
            "is_provisioning_key": False,
        }
        return web.json_response({"data": data}, dumps=_dumps)

    def _completion(self, data: dict[str, Any], path: str) -> dict[str, Any]:
        b = self.behaviour
        completion = len(b.reply.split())
        usage = {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": b.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
        if path == "/v1/completions":
            choice: dict[str, Any] = {"index": 0, "text": b.reply, "finish_reason": "stop"}
            obj = "text_completion"
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": b.reply},
                "finish_reason": "stop",
            }
            obj = "chat.completion"
        return {
            "id": "cmpl-fake",
            "object": obj,
            "created": int(time.time()),
            "model": data.get("model"),
            "choices": [choice],
            "usage": usage,
            "upstream": self.name,
        }

    async def _stream(self, request: web.Request, data: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviour
        include_usage = (data.get("stream_options") or {}).get("include_usage") is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = (b.reply + " ") * b.chunks
        pieces = words.split()[: b.chunks]
        try:
            for i, piece in enumerate(pieces):
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": data.get("model"),
                    "choices": [
                        {"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}
                    ],
                }
                if include_usage:
                    chunk["usage"] = None
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if b.mode == "break_stream" and i == 1:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
            if include_usage:
                usage = {
                    "prompt_tokens": b.prompt_tokens,
                    "completion_tokens": len(pieces),
                    "total_tokens": b.prompt_tokens + len(pieces),
                }
                final = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": data.get("model"),
                    "choices": [],
                    "usage": usage,
                }
                await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            self.stream_finished.set()
        except (asyncio.CancelledError, ConnectionResetError):
            self.streams_cut += 1
            self.cancelled.set()
            raise
        return resp


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)
