"""An OpenAI chat-completions client, an upstream that speaks only Anthropic Messages:
the request becomes a Messages request, the answer (JSON or stream) a chat completion."""

from __future__ import annotations

from typing import Any

import orjson

from .common import EventReader, Untranslatable, loads_object, now, refuse_unknown
from .usage import anthropic_usage, chat_usage_from

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI's default is "no cap"

_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "n",
        "store",
    }
)

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def request(data: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages request for a chat-completions request (raises Untranslatable)."""
    refuse_unknown(data, _HANDLED, "the Anthropic Messages API")
    if data.get("n") not in (None, 1):
        raise Untranslatable("`n` other than 1 cannot be translated to Anthropic.", "n")
    if data.get("store") not in (None, False):
        raise Untranslatable("`store` cannot be translated to Anthropic.", "store")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Untranslatable("`messages` must be a non-empty list.", "messages")
    system, turns = _messages(messages)
    out: dict[str, Any] = {"model": model, "messages": turns}
    if system:
        out["system"] = system
    limit = data.get("max_completion_tokens", data.get("max_tokens"))
    out["max_tokens"] = limit if limit is not None else DEFAULT_MAX_TOKENS
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            out[name] = data[name]
    stop = data.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if data.get("stream") is True:
        out["stream"] = True
    if isinstance(data.get("user"), str):
        out["metadata"] = {"user_id": data["user"]}
    tools = data.get("tools")
    if tools:
        out["tools"] = [_tool(t) for t in tools]
    choice = _tool_choice(data.get("tool_choice"), data.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _text_of(content: Any, role: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Untranslatable(f"{role} content may only hold text parts here.", "messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise Untranslatable(f"{role} content must be a string or a list of parts.", "messages")


def _messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise Untranslatable("Every message must be an object.", "messages")
        role = message.get("role")
        if role in ("system", "developer"):
            if turns:
                raise Untranslatable(
                    "A system message after the conversation began has no Anthropic "
                    "equivalent (Anthropic takes one system prompt, first).",
                    "messages",
                )
            system.append({"type": "text", "text": _text_of(message.get("content"), role)})
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(message)
            if not blocks:
                continue  # an empty assistant turn says nothing
        elif role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": str(message.get("tool_call_id", "")),
                    "content": _text_of(message.get("content"), "tool"),
                }
            ]
            role = "user"
        else:
            raise Untranslatable(f"Messages of role `{role}` cannot be translated.", "messages")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic alternates roles: merge
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise Untranslatable("user content must be a string or a list of parts.", "messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url")))
        else:
            raise Untranslatable(
                f"Content parts of type `{kind}` cannot be translated.", "messages"
            )
    return blocks


def _image(image: Any) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise Untranslatable("An image_url part needs a url.", "messages")
    if url.startswith("data:"):
        head, sep, payload = url[5:].partition(",")
        media, _, encoding = head.partition(";")
        if not sep or encoding != "base64":
            raise Untranslatable("Only base64 data URLs can be translated.", "messages")
        source = {"type": "base64", "media_type": media, "data": payload}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if content:
        blocks.append({"type": "text", "text": _text_of(content, "assistant")})
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if call.get("type", "function") != "function" or not isinstance(function, dict):
            raise Untranslatable("Only function tool calls can be translated.", "messages")
        arguments = loads_object(function.get("arguments") or "", "A tool call's arguments")
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": arguments,
            }
        )
    for name in ("refusal", "audio", "function_call"):
        if message.get(name) is not None:
            raise Untranslatable(f"An assistant `{name}` cannot be translated.", "messages")
    return blocks


def _tool(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise Untranslatable("Only function tools can be translated to Anthropic.", "tools")
    out: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise Untranslatable("This `tool_choice` cannot be translated.", "tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def response(body: bytes) -> bytes:
    """A chat completion from a Messages answer."""
    data = orjson.loads(body)
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    reason = STOP_REASONS.get(data.get("stop_reason") or "end_turn", "stop")
    out = {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": now(),
        "model": data.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": chat_usage_from(anthropic_usage(data.get("usage"))),
    }
    return orjson.dumps(out)


class StreamToChat:
    """Anthropic stream events in, chat.completion.chunk events out, event by event. Also
    the gateway's stream tracker: `usage`, `content_chunks`, `saw_done`."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.usage: dict[str, int] | None = None
        self.content_chunks = 0
        self.saw_done = False
        self._reader = EventReader()
        self._id = ""
        self._model = ""
        self._created = now()
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._raw: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(name, data) for name, data in self._reader.feed(chunk))

    def tail(self) -> bytes:
        return b"".join(self._event(name, data) for name, data in self._reader.tail())

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return self._emit({"choices": [choice]})

    def _emit(self, fields: dict[str, Any]) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            **fields,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _event(self, name: str, raw: bytes) -> bytes:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return b""
        kind = data.get("type", name) if isinstance(data, dict) else name
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id", "")
            self._model = message.get("model", "")
            self._merge(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") != "tool_use":
                return b""
            self._tools[data.get("index", 0)] = position = len(self._tools)
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            self.content_chunks += 1
            return self._chunk({"tool_calls": [call]})
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            self.content_chunks += 1
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                position = self._tools.get(data.get("index", 0), 0)
                part = {"index": position, "function": {"arguments": delta.get("partial_json")}}
                return self._chunk({"tool_calls": [part]})
            return b""
        if kind == "message_delta":
            self._merge(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            return self._chunk({}, STOP_REASONS.get(reason or "end_turn", "stop"))
        if kind == "message_stop":
            self.saw_done = True
            out = b""
            if self.include_usage and self.usage is not None:
                out = self._emit({"choices": [], "usage": chat_usage_from(self.usage)})
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            error = data.get("error") or {}
            body = {
                "error": {
                    "message": error.get("message", "upstream error"),
                    "type": error.get("type", "api_error"),
                    "param": None,
                    "code": None,
                }
            }
            return b"data: " + orjson.dumps(body) + b"\n\n"
        return b""  # ping, thinking and signature deltas: nothing a chat client reads

    def _merge(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._raw.update({k: v for k, v in usage.items() if v is not None})
            self.usage = anthropic_usage(self._raw)
