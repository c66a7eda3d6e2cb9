"""Small raw-ASGI helpers for the hot path (no framework objects per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tollway.core.errors import GatewayError

from .body_budget import BodyBudget

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")


async def read_body(receive: Receive, limit: int, budget: BodyBudget, headers: Headers) -> bytes:
    """The whole request body, refusing with 413 as soon as it grows past `limit`, and with
    503 when the process's body budget cannot hold it. On return `len(body)` bytes of the
    budget are held: the caller releases them when the request ends."""
    first = await receive()
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise body_too_large(limit)
        budget.reserve(len(body))
        return body
    # A body in several parts: reserve its declared size up front, else as the parts arrive.
    length = header(headers, b"content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    if declared is not None and declared > limit:
        raise body_too_large(limit)
    reserved = max(declared or 0, len(body))
    budget.reserve(reserved)
    parts = [body]
    size = len(body)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(
                    499, "Client closed the request.", "client_error", "client_closed"
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            if size > reserved:
                budget.reserve(size - reserved)
                reserved = size
            parts.append(chunk)
            if not message.get("more_body", False):
                break
    except BaseException:
        budget.release(reserved)
        raise
    budget.release(reserved - size)  # nothing, unless fewer bytes came than were declared
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


async def send_error(
    send: Send,
    error: GatewayError,
    extra: Headers,
    render: Callable[[GatewayError], bytes] = GatewayError.body,
) -> None:
    """`render` gives the body in the client's API's error shape (OpenAI's by default)."""
    headers = list(extra)
    for name, value in error.headers.items():
        headers.append((name.encode(), value.encode()))
    await send_bytes(send, error.status, render(error), headers, b"application/json")
