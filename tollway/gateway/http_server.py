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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .client_link import client_lost


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
    """`tollway serve`'s HTTP protocol: uvicorn's, over a `CoalescingTransport`, and it tells
    a request whose client left (see `client_link`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(wrapped)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            client_lost(cycle.scope)  # type: ignore[arg-type]
        super().connection_lost(exc)
