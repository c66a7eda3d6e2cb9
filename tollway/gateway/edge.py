"""Client connections: how long one may take to send a request head, how long it may sit
idle, and how many may be open at once (the protocol in `http_server.py` applies them).

uvicorn times out only a kept-alive connection after a response; a connection that never
sends a request, or sends its head a byte at a time, was kept forever, and enough of them use
up the process's open-file limit: then nothing, real requests included, could be accepted.
So every connection must deliver a complete request head within `header_timeout` of being
opened (or of its previous response), an idle one is closed after `keep_alive_timeout`, and
past `max_connections` the oldest connection still waiting for a head is closed to make room;
when every connection is busy with a request, the new one is answered 503 and closed at once.
"""

from __future__ import annotations

import resource
import weakref
from dataclasses import dataclass
from typing import Any

from tollway.core.errors import error_body

FILE_RESERVE = 64  # database, Redis, the usage writer's pipe, logs, the listening socket
MAX_DERIVED = 1 << 19


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int | None = None  # None: derived from the open-file limit


def derived_max_connections() -> int:
    """Half of what the open-file limit leaves after a reserve: each connection in a request
    also holds one upstream connection."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > MAX_DERIVED:
        soft = MAX_DERIVED
    return max(8, (soft - FILE_RESERVE) // 2)


class Edge:
    """One server's connection state: its limits, and the connections waiting for a request
    head, oldest first (the ones that may be closed to make room)."""

    __slots__ = ("cap", "idle_timeout", "limits", "waiting")

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self.cap = limits.max_connections or derived_max_connections()
        self.idle_timeout = min(limits.keep_alive_timeout, limits.header_timeout)
        self.waiting: dict[Any, None] = {}

    def make_room(self) -> bool:
        """Close the connection that has waited longest for a request head, if any."""
        for conn in self.waiting:
            del self.waiting[conn]
            conn.transport.close()
            return True
        return False


_EDGES: weakref.WeakKeyDictionary[Any, Edge] = weakref.WeakKeyDictionary()


def edge_for(server_state: Any, app: Any) -> Edge:
    """The edge of the server that `server_state` belongs to; its limits come from the app
    (`TollwayApp.edge_limits`, under whatever middleware uvicorn wrapped it in)."""
    edge = _EDGES.get(server_state)
    if edge is None:
        limits = EdgeLimits()
        for _ in range(8):
            found = getattr(app, "edge_limits", None)
            if isinstance(found, EdgeLimits):
                limits = found
                break
            app = getattr(app, "app", None)
            if app is None:
                break
        edge = _EDGES[server_state] = Edge(limits)
    return edge


_BUSY = error_body(
    "The server has too many open connections; retry shortly.",
    "service_unavailable_error",
    "too_many_connections",
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_BUSY)).encode()
    + b"\r\n\r\n"
    + _BUSY
)
HEAD_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
