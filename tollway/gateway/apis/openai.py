"""OpenAI's API (every `/v1` path but Anthropic's): errors, usage and streams as before;
chat completions translate to Anthropic Messages."""

from __future__ import annotations

from typing import Any

from tollway.core.errors import GatewayError, error_body
from tollway.translate import chat_to_messages
from tollway.translate.usage import anthropic_usage

from ..sse import SSETracker, usage_from_json
from .base import Tracker
from .foreign import error_message, parse_json


class OpenAIApi:
    name = "openai"
    title = "OpenAI"
    foreign_path = b"/messages"

    def error_body(self, error: GatewayError) -> bytes:
        return error.body()

    def stream_error(self, message: str, type: str, code: str | None) -> bytes:
        return b"data: " + error_body(message, type, code) + b"\n\n"

    def usage(self, body: bytes) -> dict[str, int] | None:
        return usage_from_json(body)

    def tracker(self, inject_usage: bool) -> Tracker:
        return SSETracker(hide_usage_chunk=inject_usage)

    def translatable(self, path: str) -> bool:
        return path == "/v1/chat/completions"

    def translate(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        return chat_to_messages.request(data, model)

    def foreign_usage(self, body: bytes) -> dict[str, int] | None:
        data = parse_json(body)
        return anthropic_usage(data.get("usage")) if data is not None else None

    def foreign_json(self, body: bytes) -> bytes:
        return chat_to_messages.response(body)

    def foreign_stream(self, client_wants_usage: bool, model: str | None) -> Tracker:
        return chat_to_messages.StreamToChat(client_wants_usage)

    def foreign_error(self, status: int, body: bytes) -> bytes:
        kind, message = error_message(body)
        return error_body(message, kind or "upstream_error")


OPENAI = OpenAIApi()
