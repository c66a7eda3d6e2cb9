"""A fake Anthropic Messages upstream: a real aiohttp server on 127.0.0.1 in its own thread.
It checks `x-api-key`, answers `/v1/messages` (JSON or a stream, a tool call when tools are
offered) and `/v1/messages/count_tokens`, and records every request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import web

from .fake_upstream import Seen

USAGE = {
    "input_tokens": 20,
    "output_tokens": 7,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 50,
}


class FakeAnthropic:
    def __init__(self, api_key: str = "sk-ant-SECRET-0001") -> None:
        self.api_key = api_key
        self.seen: list[Seen] = []
        self.reply = "Hello from Claude"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeAnthropic:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            assert site._server is not None
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        from multidict import CIMultiDict

        body = await request.read()
        headers = CIMultiDict(request.headers)
        self.seen.append(Seen(request.method, request.path, request.query_string, headers, body))
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        data: dict[str, Any] = orjson.loads(body) if body else {}
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": 42})
        if request.path != "/v1/messages":
            return _error(404, "not_found_error", "no such route")
        if b"PLEASE-FAIL" in body:
            return _error(400, "invalid_request_error", "messages: bad turn order")
        if "max_tokens" not in data:
            return _error(400, "invalid_request_error", "max_tokens: Field required")
        blocks = self._blocks(data)
        if data.get("stream"):
            return await self._stream(request, data, blocks)
        return web.json_response(
            {
                "id": "msg_fake01",
                "type": "message",
                "role": "assistant",
                "model": data["model"],
                "content": blocks,
                "stop_reason": "tool_use" if data.get("tools") else "end_turn",
                "stop_sequence": None,
                "usage": USAGE,
            }
        )

    def _blocks(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        text = self.reply
        last = data["messages"][-1]["content"]
        if isinstance(last, list) and any(b.get("type") == "image" for b in last):
            source = next(b for b in last if b.get("type") == "image")["source"]
            text = f"I see an image ({source['type']})"
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if data.get("tools"):
            name = data["tools"][0]["name"]
            blocks.append(
                {"type": "tool_use", "id": "toolu_01", "name": name, "input": {"city": "Paris"}}
            )
        return blocks

    async def _stream(
        self, request: web.Request, data: dict[str, Any], blocks: list[dict[str, Any]]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, payload: dict[str, Any]) -> None:
            await resp.write(
                b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
            )

        start_usage = {**USAGE, "output_tokens": 1}
        message = {
            "id": "msg_fake02",
            "type": "message",
            "role": "assistant",
            "model": data["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        await event("message_start", {"type": "message_start", "message": message})
        await event("ping", {"type": "ping"})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                await event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
                for word in block["text"].split(" "):
                    delta = {"type": "text_delta", "text": word + " "}
                    await event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
            else:
                start = {**block, "input": {}}
                await event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
                text = orjson.dumps(block["input"]).decode()
                for part in (text[:5], text[5:]):
                    delta = {"type": "input_json_delta", "partial_json": part}
                    await event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
        reason = "tool_use" if data.get("tools") else "end_turn"
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": {"output_tokens": USAGE["output_tokens"]},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)
