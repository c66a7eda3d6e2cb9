"""What both directions share: the refusal for what cannot be mapped, SSE framing, ids."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson


class Untranslatable(ValueError):
    """A request field or value with no equivalent in the other API: a 400 for the client
    (never silently dropped)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def refuse_unknown(data: dict[str, Any], handled: frozenset[str], api: str) -> None:
    """Every field the converter does not map is refused (null values are no request)."""
    for name, value in data.items():
        if name not in handled and value is not None:
            raise Untranslatable(
                f"`{name}` cannot be translated for an upstream that speaks only {api}.", name
            )


def loads_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        raise Untranslatable(f"{what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise Untranslatable(f"{what} must be a JSON object.")
    return value


def now() -> int:
    return int(time.time())


_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")


class EventReader:
    """Incremental SSE parser: bytes in, complete (event name, data) pairs out."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        data = self._pending + chunk
        out: list[tuple[str, bytes]] = []
        pos = 0
        for match in _BOUNDARY.finditer(data):
            event = _parse(data[pos : match.start()])
            if event is not None:
                out.append(event)
            pos = match.end()
        self._pending = data[pos:]
        return out

    def tail(self) -> list[tuple[str, bytes]]:
        rest, self._pending = self._pending, b""
        event = _parse(rest) if rest.strip() else None
        return [event] if event is not None else []


def _parse(block: bytes) -> tuple[str, bytes] | None:
    name = ""
    data: list[bytes] = []
    for line in _LINE.split(block):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if not data and not name:
        return None
    return name, b"\n".join(data)


def sse(name: str | None, payload: Any) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"
