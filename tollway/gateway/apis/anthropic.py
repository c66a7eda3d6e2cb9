"""Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`): its error shape,
usage from `usage` and from `message_start`/`message_delta` events, and the translation of
messages for an upstream that speaks only OpenAI chat completions."""

from __future__ import annotations

from typing import Any

import orjson

from tollway.core.errors import GatewayError
from tollway.translate import messages_to_chat
from tollway.translate.common import EventReader
from tollway.translate.usage import anthropic_usage

from ..sse import usage_from_json
from .base import Tracker
from .foreign import error_message, parse_json

MESSAGES = "/v1/messages"
ANTHROPIC_PATHS = frozenset({MESSAGES, "/v1/messages/count_tokens"})

# Anthropic's error types by status (its SDKs pick their exception by status).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    499: "invalid_request_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def anthropic_error(status: int, message: str) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type(status), "message": message}}
    )


class MessagesTracker:
    """A native Messages stream passes through byte for byte; its usage is read from the
    `message_start` and `message_delta` events on the way."""

    def __init__(self) -> None:
        self.usage: dict[str, int] | None = None
        self.content_chunks = 0
        self.saw_done = False
        self._reader = EventReader()
        self._raw: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> bytes:
        self._read(self._reader.feed(chunk))
        return chunk

    def tail(self) -> bytes:
        self._read(self._reader.tail())
        return b""

    def _read(self, events: list[tuple[str, bytes]]) -> None:
        for name, data in events:
            if name == "content_block_delta":
                self.content_chunks += 1
            elif name == "message_stop":
                self.saw_done = True
            elif name in ("message_start", "message_delta"):
                obj = parse_json(data)
                if obj is None:
                    continue
                usage = obj.get("usage") if name == "message_delta" else None
                if name == "message_start" and isinstance(obj.get("message"), dict):
                    usage = obj["message"].get("usage")
                if isinstance(usage, dict):
                    self._raw.update({k: v for k, v in usage.items() if v is not None})
                    self.usage = anthropic_usage(self._raw)


class AnthropicApi:
    name = "anthropic"
    title = "Anthropic Messages"
    foreign_path = b"/chat/completions"

    def error_body(self, error: GatewayError) -> bytes:
        return anthropic_error(error.status, error.message)

    def stream_error(self, message: str, type: str, code: str | None) -> bytes:
        body = {"type": "error", "error": {"type": _stream_type(type), "message": message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"

    def usage(self, body: bytes) -> dict[str, int] | None:
        data = parse_json(body) if b'"usage"' in body else None
        return anthropic_usage(data.get("usage")) if data is not None else None

    def tracker(self, inject_usage: bool) -> Tracker:
        return MessagesTracker()

    def translatable(self, path: str) -> bool:
        return path == MESSAGES

    def translate(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        return messages_to_chat.request(data, model)

    def foreign_usage(self, body: bytes) -> dict[str, int] | None:
        return usage_from_json(body)

    def foreign_json(self, body: bytes) -> bytes:
        return messages_to_chat.response(body)

    def foreign_stream(self, client_wants_usage: bool, model: str | None) -> Tracker:
        return messages_to_chat.StreamToMessages(model)

    def foreign_error(self, status: int, body: bytes) -> bytes:
        return anthropic_error(status, error_message(body)[1])


def _stream_type(openai_type: str) -> str:
    return "timeout_error" if openai_type == "timeout_error" else "api_error"


ANTHROPIC = AnthropicApi()
