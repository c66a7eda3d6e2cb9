"""Reading the other API's answers: JSON objects and error messages in either shape."""

from __future__ import annotations

from typing import Any

import orjson


def parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def error_message(body: bytes) -> tuple[str | None, str]:
    """(error type, message) of an OpenAI- or Anthropic-shaped error body."""
    data = parse_json(body)
    error = data.get("error") if data is not None else None
    if isinstance(error, dict):
        kind = error.get("type")
        return (kind if isinstance(kind, str) else None), str(error.get("message", ""))
    return None, body[:500].decode("utf-8", "replace") or "The upstream refused the request."
