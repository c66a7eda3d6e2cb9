"""A fake Realtime upstream: a real WebSocket server (websockets) on 127.0.0.1 in its own
thread. It checks the upstream key, says `session.created`, and answers each
`response.create` with a `response.done` carrying usage."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

USAGE = {"total_tokens": 30, "input_tokens": 10, "output_tokens": 20}


class FakeRealtime:
    def __init__(self, api_key: str = "sk-upstream-SECRET-rt") -> None:
        self.api_key = api_key
        self.port = 0
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.received: list[dict[str, Any]] = []
        self.open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeRealtime:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def open_server() -> Server:
                return await serve(self._session, "127.0.0.1", 0, process_request=self._check)

            self._server = loop.run_until_complete(open_server())
            self.port = next(iter(self._server.sockets)).getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-realtime", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        self.headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return conn.respond(401, "bad key\n")
        return None

    async def _session(self, ws: ServerConnection) -> None:
        self.open += 1
        try:
            await ws.send(orjson.dumps({"type": "session.created", "session": {}}).decode())
            async for raw in ws:
                event = orjson.loads(raw)
                self.received.append(event)
                if event.get("type") == "response.create":
                    done = {
                        "type": "response.done",
                        "event_id": "ev1",
                        "response": {"id": "resp1", "status": "completed", "usage": USAGE},
                    }
                    await ws.send(orjson.dumps(done).decode())
        finally:
            self.open -= 1
