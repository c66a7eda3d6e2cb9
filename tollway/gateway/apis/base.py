"""What an API supplies to the endpoint (see `__init__.py`)."""

from __future__ import annotations

from typing import Any, Protocol

from tollway.core.errors import GatewayError


class Tracker(Protocol):
    """Watches (or converts) a stream on its way to the client."""

    usage: dict[str, int] | None
    content_chunks: int
    saw_done: bool

    def feed(self, chunk: bytes) -> bytes: ...

    def tail(self) -> bytes: ...


class Api(Protocol):
    name: str  # as upstreams declare it in `apis`
    title: str
    foreign_path: bytes  # the other API's path after the base URL

    def error_body(self, error: GatewayError) -> bytes: ...

    def stream_error(self, message: str, type: str, code: str | None) -> bytes: ...

    def usage(self, body: bytes) -> dict[str, int] | None:
        """Usage of a JSON answer in this API's own format."""
        ...

    def tracker(self, inject_usage: bool) -> Tracker: ...

    def translatable(self, path: str) -> bool: ...

    def translate(self, data: dict[str, Any], model: str) -> dict[str, Any]: ...

    def foreign_usage(self, body: bytes) -> dict[str, int] | None: ...

    def foreign_json(self, body: bytes) -> bytes: ...

    def foreign_stream(self, client_wants_usage: bool, model: str | None) -> Tracker: ...

    def foreign_error(self, status: int, body: bytes) -> bytes: ...
