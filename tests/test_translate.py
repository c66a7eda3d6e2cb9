"""The converters between chat completions and Anthropic Messages, as pure functions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tollway.gateway.apis import order
from tollway.gateway.apis.anthropic import anthropic_error
from tollway.gateway.body import RequestInfo
from tollway.gateway.pricing import Price, cost_usd
from tollway.translate import chat_to_messages as c2m
from tollway.translate import messages_to_chat as m2c
from tollway.translate.common import Untranslatable, sse
from tollway.upstreams.target import Upstream

TOOL_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


def test_chat_request_to_messages() -> None:
    out = c2m.request(
        {
            "model": "gpt",
            "messages": [
                {"role": "system", "content": "A"},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": "let me look",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"q":1}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                },
            ],
            "max_completion_tokens": 9,
            "stop": "END",
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": TOOL_SCHEMA}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
            "user": "u1",
            "stream_options": {"include_usage": True},
        },
        "claude-x",
    )
    assert out["model"] == "claude-x" and out["max_tokens"] == 9
    assert out["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert out["stop_sequences"] == ["END"] and out["temperature"] == 0.5
    assert out["metadata"] == {"user_id": "u1"}
    assert out["tools"] == [{"name": "f", "input_schema": TOOL_SCHEMA}]
    assert out["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user"]  # tool results and the image merged
    assistant = out["messages"][1]["content"]
    assert assistant[1] == {"type": "tool_use", "id": "c1", "name": "f", "input": {"q": 1}}
    assert assistant[2]["input"] == {}
    last = out["messages"][2]["content"]
    assert last[0] == {"type": "tool_result", "tool_use_id": "c1", "content": "r1"}
    assert last[1]["content"] == "r2"
    assert last[2] == {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_chat_tool_choice(choice: str, expected: dict[str, Any]) -> None:
    data = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}
    assert c2m.request(data, "m")["tool_choice"] == expected


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            "messages",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{"}}],
                    }
                ]
            },
            None,
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png,xx"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
    ],
)
def test_chat_untranslatable(extra: dict[str, Any], param: str | None) -> None:
    data = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(Untranslatable) as err:
        c2m.request(data, "m")
    assert err.value.param == param and err.value.message


def test_messages_request_to_chat() -> None:
    out = m2c.request(
        {
            "model": "claude",
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "max_tokens": 20,
            "stop_sequences": ["Z"],
            "stream": True,
            "metadata": {"user_id": "u"},
            "thinking": {"type": "disabled"},
            "tools": [{"name": "f", "description": "d", "input_schema": TOOL_SCHEMA}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"},
                        }
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "a"}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": "boom",
                            "is_error": True,
                        },
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
        },
        "vllm",
    )
    assert out["model"] == "vllm" and out["max_tokens"] == 20 and out["stop"] == ["Z"]
    assert out["stream_options"] == {"include_usage": True} and out["user"] == "u"
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["tools"][0]["function"] == {
        "name": "f",
        "parameters": TOOL_SCHEMA,
        "description": "d",
    }
    m = out["messages"]
    assert m[0] == {"role": "system", "content": "S"}
    assert m[1]["content"][0]["image_url"]["url"] == "data:image/jpeg;base64,AAA"
    assert m[2]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"q":"a"}'}
    assert m[3] == {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}
    assert m[4] == {"role": "user", "content": [{"type": "text", "text": "and?"}]}


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking": {"type": "enabled", "budget_tokens": 100}},
        {"top_k": 3},
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {"messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}]},
        {"tool_choice": {"type": "weird"}},
    ],
)
def test_messages_untranslatable(extra: dict[str, Any]) -> None:
    data = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(Untranslatable):
        m2c.request(data, "m")


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_messages_response_to_chat(reason: str, finish: str) -> None:
    body = {
        "id": "msg_1",
        "model": "claude",
        "content": [
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}},
        ],
        "stop_reason": reason,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 2,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 1,
        },
    }
    out = orjson.loads(c2m.response(orjson.dumps(body)))
    choice = out["choices"][0]
    assert choice["finish_reason"] == finish and choice["message"]["content"] == "ab"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x":1}'}
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use")],
)
def test_chat_response_to_messages(finish: str, reason: str) -> None:
    body = {
        "id": "c9",
        "model": "vllm",
        "choices": [
            {
                "message": {
                    "content": "hi",
                    "tool_calls": [{"id": "k", "function": {"name": "f", "arguments": '{"a":2}'}}],
                },
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 6},
        },
    }
    out = orjson.loads(m2c.response(orjson.dumps(body)))
    assert out["type"] == "message" and out["id"] == "msg_c9" and out["stop_reason"] == reason
    assert out["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "k", "name": "f", "input": {"a": 2}},
    ]
    assert out["usage"] == {
        "input_tokens": 4,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 6,
    }


def _bytewise(feed: Any, tail: Any, data: bytes) -> bytes:
    """Feed one byte at a time: events split anywhere must convert the same."""
    return b"".join(feed(data[i : i + 1]) for i in range(len(data))) + tail()


def _data_events(stream: bytes) -> list[Any]:
    return [
        line[6:] if line[6:] == b"[DONE]" else orjson.loads(line[6:])
        for line in stream.split(b"\n")
        if line.startswith(b"data: ")
    ]


ANTHROPIC_STREAM = b"".join(
    [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "m1",
                    "model": "c",
                    "usage": {"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 2},
                },
            },
        ),
        sse("ping", {"type": "ping"}),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"a"'},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": ":1}"},
            },
        ),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
).replace(b"\n", b"\r\n")  # CRLF framing converts too


def test_anthropic_stream_to_chat_chunks() -> None:
    conv = c2m.StreamToChat(include_usage=True)
    events = _data_events(_bytewise(conv.feed, conv.tail, ANTHROPIC_STREAM))
    assert events[-1] == b"[DONE]" and conv.saw_done
    deltas = [e["choices"][0]["delta"] for e in events[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0]["id"] == "t1"
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:5])
    assert args == '{"a":1}'
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert (
        events[-2]["usage"]["prompt_tokens"] == 5 and events[-2]["usage"]["completion_tokens"] == 9
    )
    assert conv.usage is not None and conv.usage["cached_tokens"] == 2


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
    return (
        b"data: " + orjson.dumps({"id": "c1", "model": "v", "choices": choices, **extra}) + b"\n\n"
    )


def test_chat_stream_to_anthropic_events() -> None:
    stream = b"".join(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "He"}),
            _chunk({"content": "y"}),
            _chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "k1", "function": {"name": "f", "arguments": ""}}
                    ]
                }
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"b":'}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "2}"}}]}),
            _chunk({}, "tool_calls"),
            _chunk({}, usage={"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}),
            b"data: [DONE]\n\n",
        ]
    )
    conv = m2c.StreamToMessages("v")
    out = _bytewise(conv.feed, conv.tail, stream)
    names = [line[7:].decode() for line in out.split(b"\n") if line.startswith(b"event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = _data_events(out)
    assert events[0]["message"]["id"] == "msg_c1"
    assert events[5]["content_block"] == {"type": "tool_use", "id": "k1", "name": "f", "input": {}}
    assert events[9]["delta"]["stop_reason"] == "tool_use"
    assert events[9]["usage"]["input_tokens"] == 7 and events[9]["usage"]["output_tokens"] == 4
    assert conv.saw_done and conv.usage == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
    }


def test_chat_stream_without_done_still_finishes() -> None:
    conv = m2c.StreamToMessages("v")
    out = conv.feed(_chunk({"content": "x"}) + _chunk({}, "length")) + conv.tail()
    assert b"message_stop" in out and b'"max_tokens"' in out


def test_cost_with_cache_reads_and_writes() -> None:
    price = Price(input=3, output=15, cached_input=0.3, cache_write=3.75)
    # 170 prompt tokens: 50 read from the cache, 100 written to it, 20 fresh
    assert cost_usd(price, 170, 7, 50, 100) == pytest.approx((60 + 15 + 375 + 105) / 1e6)
    assert cost_usd(Price(1, 1), 10, 0, 0, 5) == pytest.approx(10 / 1e6)  # write = input


@pytest.mark.parametrize(
    ("auth", "line"),
    [
        ("bearer", b"authorization: Bearer k1\r\n"),
        ("x-api-key", b"x-api-key: k1\r\n"),
        ("header:X-Portkey-Key", b"x-portkey-key: k1\r\n"),
    ],
)
def test_upstream_auth_styles(auth: str, line: bytes) -> None:
    up = Upstream("u", "http://h/v1", "k1", auth=auth, apis=frozenset({"anthropic"}))
    assert up.fixed_lines.startswith(line)
    assert line.split(b":")[0] in up.drop_request  # a client's own value never reaches it


@pytest.mark.parametrize("auth", ["basic", "header:", "header:Host", "header:bad name"])
def test_upstream_bad_auth_style(auth: str) -> None:
    with pytest.raises(ValueError):
        Upstream("u", "http://h/v1", "k1", auth=auth)
    with pytest.raises(ValueError):
        Upstream("u", "http://h/v1", "k1", apis=frozenset({"gemini"}))


def test_native_upstreams_first_and_untranslatable_requests_stay_native() -> None:
    openai_only = Upstream("o", "http://o/v1", "k")
    both = Upstream("b", "http://b/v1", "k", apis=frozenset({"openai", "anthropic"}))
    claude = Upstream("c", "http://c/v1", "k", apis=frozenset({"anthropic"}))
    info = RequestInfo(api="anthropic", foreign={"model": "m"})
    assert order([openai_only, claude, both], info) == [claude, both, openai_only]
    info.foreign = None  # count_tokens: nothing to translate to
    assert order([openai_only, claude, both], info) == [claude, both]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_anthropic_error_types(status: int, kind: str) -> None:
    body = orjson.loads(anthropic_error(status, "why"))
    assert body == {"type": "error", "error": {"type": kind, "message": "why"}}
