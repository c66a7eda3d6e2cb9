"""Small raw-ASGI helpers for the hot path (no framework objects per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tollway.core.errors import GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing with 413 as soon as it grows past `limit`."""
    first = await receive()
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise body_too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(499, "Client closed the request.", "client_error", "client_closed")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body exceeds the limit of {limit} bytes.",
        "invalid_request_error",
        "request_too_large",
    )


def header(headers: Headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Headers, content_type: bytes | None = None
) -> None:
    out = [*headers, (b"content-length", str(len(body)).encode())]
    if content_type is not None:
        out.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, error: GatewayError, extra: Headers) -> None:
    headers = list(extra)
    for name, value in error.headers.items():
        headers.append((name.encode(), value.encode()))
    await send_bytes(send, error.status, error.body(), headers, b"application/json")
