"""uvicorn's httptools protocol with one change: what a response writes in one turn of the
event loop leaves in one write.

uvicorn writes a response's head as soon as the app sends `http.response.start`, and the body
with the next message: two send() system calls for every answer that is not streamed. System
calls were the largest cost left on the proxy path (py-spy: about a third of the event loop's
time in transport.write), so the writes of one turn are joined and flushed at the end of that
turn. A streamed event still leaves in the turn it was sent in: no delay is added.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .client_link import client_lost
from .edge import HEAD_TIMEOUT, REFUSAL, edge_for


class CoalescingTransport:
    """A transport whose writes of one loop turn go out as one write; everything else is
    the real transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class TollwayHttpProtocol(HttpToolsProtocol):
    """`tollway serve`'s HTTP protocol: uvicorn's, over a `CoalescingTransport`, with the
    connection limits of `edge.py` (a head timeout from the connection's start or its last
    response, an idle timeout, a cap on open connections), and it tells a request whose client
    left (see `client_link`)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.edge = edge_for(server_state, self.app)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0
        self._scope_at_wait: Any = None  # a new scope since then = a request head began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(wrapped)  # type: ignore[arg-type]
        edge = self.edge
        if len(self.connections) > edge.cap and not edge.make_room():
            self.transport.write(REFUSAL)  # every connection is in a request: refuse this one
            self.transport.close()
            return
        self._wait_for_head(edge.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            client_lost(cycle.scope)  # type: ignore[arg-type]
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, with the wait for the next head in place of its keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._wait_for_head(self.edge.idle_timeout)

    def _wait_for_head(self, idle_limit: float) -> None:
        self._waiting_since = self.loop.time()
        self._scope_at_wait = self.scope
        self.edge.waiting[self] = None
        self._head_timer = self.loop.call_later(idle_limit, self._head_timeout)

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
            self.edge.waiting.pop(self, None)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.scope is not self._scope_at_wait:  # part of a head came: it has until the end
            left = self._waiting_since + self.edge.limits.header_timeout - self.loop.time()
            if left > 0:
                self._head_timer = self.loop.call_later(left, self._head_timeout)
                return
            self.transport.write(HEAD_TIMEOUT)
        self.edge.waiting.pop(self, None)
        self.transport.close()
