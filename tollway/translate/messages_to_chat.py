"""An Anthropic Messages client, an upstream that speaks only OpenAI chat completions (vLLM,
most OpenAI-compatible servers): the request becomes a chat request, the answer (JSON or
stream) a Messages answer."""

from __future__ import annotations

from typing import Any

import orjson

from tollway.gateway.sse import normalize_usage

from .common import EventReader, Untranslatable, loads_object, refuse_unknown, sse
from .usage import messages_usage_from

_HANDLED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
    }
)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def request(data: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat-completions request for a Messages request (raises Untranslatable)."""
    refuse_unknown(data, _HANDLED, "OpenAI chat completions")
    thinking = data.get("thinking")
    if thinking is not None and not (
        isinstance(thinking, dict) and thinking.get("type") == "disabled"
    ):
        raise Untranslatable(
            "`thinking` cannot be translated to OpenAI chat completions.", "thinking"
        )
    messages: list[dict[str, Any]] = []
    system = data.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system, "system")})
    turns = data.get("messages")
    if not isinstance(turns, list) or not turns:
        raise Untranslatable("`messages` must be a non-empty list.", "messages")
    for turn in turns:
        messages.extend(_turn(turn))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if data.get("max_tokens") is not None:
        out["max_tokens"] = data["max_tokens"]
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            out[name] = data[name]
    if data.get("stop_sequences"):
        out["stop"] = list(data["stop_sequences"])
    if data.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = data.get("tools")
    if tools:
        out["tools"] = [_tool(t) for t in tools]
    choice = data.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, out)
    return out


def _text(content: Any, what: str) -> str:
    """A string, or text blocks (their cache_control is a hint with no meaning here)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "text":
                raise Untranslatable(f"{what} may only hold text blocks here.", "messages")
            parts.append(str(block.get("text", "")))
        return "".join(parts)
    raise Untranslatable(f"{what} must be a string or a list of blocks.", "messages")


def _turn(turn: Any) -> list[dict[str, Any]]:
    if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
        raise Untranslatable("Every message needs the role user or assistant.", "messages")
    content = turn.get("content")
    if isinstance(content, str):
        return [{"role": turn["role"], "content": content}]
    if not isinstance(content, list):
        raise Untranslatable("Message content must be a string or a list.", "messages")
    if turn["role"] == "assistant":
        return [_assistant(content)]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id", "")),
                    "content": _text(block.get("content", ""), "A tool_result"),
                }
            )
            if block.get("is_error"):
                out[-1]["content"] = "Error: " + out[-1]["content"]
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        else:
            raise Untranslatable(
                f"Content blocks of type `{kind}` cannot be translated.", "messages"
            )
    if parts:
        out.append({"role": "user", "content": parts})  # after the tool results it follows
    return out


def _image_url(block: dict[str, Any]) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise Untranslatable("Only base64 and url image sources can be translated.", "messages")


def _assistant(content: list[Any]) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        else:
            raise Untranslatable(
                f"Assistant blocks of type `{kind}` cannot be translated.", "messages"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
        raise Untranslatable("Server tools cannot be translated to OpenAI.", "tools")
    function: dict[str, Any] = {
        "name": tool.get("name"),
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise Untranslatable("This `tool_choice` cannot be translated.", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _message_id(upstream_id: Any) -> str:
    return f"msg_{upstream_id}" if upstream_id else "msg_tollway"


def response(body: bytes) -> bytes:
    """A Messages answer from a chat completion."""
    data = orjson.loads(body)
    choices = data.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = loads_object(function.get("arguments") or "", "A tool call's arguments")
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    reason = STOP_REASONS.get(choices[0].get("finish_reason") or "stop", "end_turn")
    out = {
        "id": _message_id(data.get("id")),
        "type": "message",
        "role": "assistant",
        "model": data.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": messages_usage_from(normalize_usage(data.get("usage"))),
    }
    return orjson.dumps(out)


class StreamToMessages:
    """chat.completion.chunk events in, Anthropic stream events out, event by event. Also
    the gateway's stream tracker: `usage`, `content_chunks`, `saw_done`."""

    def __init__(self, model: str | None) -> None:
        self.usage: dict[str, int] | None = None
        self.content_chunks = 0
        self.saw_done = False
        self._model = model
        self._reader = EventReader()
        self._started = False
        self._index = -1  # the open content block's index (-1: none open)
        self._open: str | None = None  # "text" or "tool:<openai tool index>"
        self._reason: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(data) for _, data in self._reader.feed(chunk))

    def tail(self) -> bytes:
        out = b"".join(self._event(data) for _, data in self._reader.tail())
        if self._started and not self.saw_done and self._reason is not None:
            out += self._finish()  # an upstream that ended without [DONE]
        return out

    def _start(self, data: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(data.get("id")),
            "type": "message",
            "role": "assistant",
            "model": data.get("model") or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + sse("content_block_start", start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        self.content_chunks += 1
        event = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return sse("content_block_delta", event)

    def _event(self, raw: bytes) -> bytes:
        if raw.strip() == b"[DONE]":
            return self._finish()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(data, dict):
            return b""
        if isinstance(data.get("error"), dict):
            error = data["error"]
            body = {
                "type": "error",
                "error": {"type": "api_error", "message": str(error.get("message", ""))},
            }
            return sse("error", body)
        out = b"" if self._started else self._start(data)
        usage = normalize_usage(data.get("usage"))
        if usage is not None:
            self.usage = usage
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._open != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                kind = f"tool:{call.get('index', 0)}"
                function = call.get("function") or {}
                if self._open != kind:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    out += self._open_block(kind, block)
                if function.get("arguments"):
                    json_delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    out += self._delta(json_delta)
            if choice.get("finish_reason"):
                self._reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def _finish(self) -> bytes:
        if self.saw_done:
            return b""
        self.saw_done = True
        out = b"" if self._started else self._start({})
        out += self._close()
        usage = messages_usage_from(self.usage)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._reason or "end_turn", "stop_sequence": None},
            "usage": usage,
        }
        return out + sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})
