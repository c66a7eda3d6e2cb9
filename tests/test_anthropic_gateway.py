"""The Anthropic Messages front door with the official anthropic SDK, and translation both
ways (openai SDK → Anthropic-only upstream, anthropic SDK → OpenAI-only upstream), through a
real Tollway."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from aiohttp import web

from .fake_anthropic import FakeAnthropic
from .fixtures_gateway import Stack, make_key

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FakeAnthropic]]:
    claude = FakeAnthropic().start()
    tmp = tmp_path_factory.mktemp("anthropic")
    from .fake_upstream import FakeUpstream

    vllm = FakeUpstream("vllm", "sk-upstream-SECRET-vllm").start()
    stack = Stack(
        tmp,
        upstreams=[
            {
                "name": "claude",
                "base_url": claude.base_url,
                "api_key": claude.api_key,
                "auth": "x-api-key",
                "apis": ["anthropic"],
                "models": ["claude-test"],
            },
            {
                "name": "vllm",
                "base_url": vllm.base_url,
                "api_key": vllm.api_key,
                "models": ["vllm-model"],
            },
        ],
        config_extra={
            "prices": {
                "claude-test": {"input": 3, "output": 15, "cached_input": 0.3, "cache_write": 3.75}
            }
        },
    )
    stack.a.stop()  # the stack's own fakes are not used here
    stack.b.stop()
    stack.a = vllm
    yield stack, claude
    stack.gateway.stop()
    vllm.stop()
    claude.stop()


def client(stack: Stack, key: str | None = None, bearer: bool = False) -> anthropic.Anthropic:
    if bearer:  # as Claude Code with ANTHROPIC_AUTH_TOKEN
        return anthropic.Anthropic(
            auth_token=key or stack.key, api_key=None, base_url=stack.url, max_retries=0
        )
    return anthropic.Anthropic(api_key=key or stack.key, base_url=stack.url, max_retries=0)


def test_messages_native_bytes_usage_and_cost(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, claude = rig
    raw = client(stack).messages.with_raw_response.create(
        model="claude-test",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "anthropic-beta": "prompt-caching-2024-07-31",
            "anthropic-version": "2023-06-01",
        },
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Hello from Claude"
    assert message.usage.cache_read_input_tokens == 50
    seen = claude.seen[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == claude.api_key
    assert "authorization" not in seen.headers  # the key goes where the upstream wants it
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert stack.key not in str(seen.headers)
    row = stack.row(raw.headers["x-request-id"])
    assert row["endpoint"] == "/v1/messages" and row["upstream"] == "claude"
    assert row["prompt_tokens"] == 170 and row["completion_tokens"] == 7
    assert row["cached_tokens"] == 50 and row["cache_write_tokens"] == 100
    # 20 fresh x 3 + 50 read x 0.3 + 100 written x 3.75 + 7 out x 15, per million
    assert row["cost_usd"] == pytest.approx((60 + 15 + 375 + 105) / 1e6)


def test_messages_stream_bearer_auth(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, claude = rig
    with client(stack, bearer=True).messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text == "Hello from Claude "
    assert final.usage.output_tokens == 7 and final.usage.cache_creation_input_tokens == 100
    row = stack.row(request_id)
    assert row["stream"] and row["prompt_tokens"] == 170 and row["completion_tokens"] == 7
    assert row["cache_write_tokens"] == 100 and row["error_type"] is None
    assert claude.seen[-1].headers["x-api-key"] == claude.api_key


def test_count_tokens_and_native_tool_use(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, claude = rig
    c = client(stack)
    count = c.messages.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert count.input_tokens == 42
    assert claude.seen[-1].path == "/v1/messages/count_tokens"
    message = c.messages.create(
        model="claude-test",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"


def test_errors_in_anthropic_shape(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(stack, key="tw-nope").messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key provided."},
    }
    narrow = make_key(stack.db_url, models=["vllm-model"], rpm=1)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client(stack, key=narrow).messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(stack).messages.create(
            model="no-such", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    client(stack, key=narrow).messages.create(
        model="vllm-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(anthropic.RateLimitError) as limited:
        client(stack, key=narrow).messages.create(
            model="vllm-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_claude_code_model_discovery(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    page = client(stack).models.list()
    ids = [m.id for m in page.data]
    assert ids == sorted(ids) and "claude-test" in ids and "vllm-model" in ids
    assert page.data[0].type == "model" and page.data[0].display_name == page.data[0].id
    raw = httpx.get(
        stack.url + "/v1/models",
        headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"},
    ).json()
    assert raw["has_more"] is False and raw["first_id"] == ids[0] and raw["last_id"] == ids[-1]
    assert client(stack).models.retrieve("claude-test").id == "claude-test"
    plain = httpx.get(stack.url + "/v1/models", headers={"authorization": f"Bearer {stack.key}"})
    assert plain.json()["object"] == "list"  # OpenAI's shape without anthropic-version


# -- openai SDK → Anthropic-only upstream ---------------------------------------------------


def test_openai_client_through_translation(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, claude = rig
    oc = stack.client()
    raw = oc.chat.completions.with_raw_response.create(
        model="claude-test",
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ],
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "I see an image (base64)"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 170
    sent = orjson.loads(claude.seen[-1].body)
    assert claude.seen[-1].path == "/v1/messages"
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"][0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": PNG,
    }
    assert sent["max_tokens"] == 4096
    row = stack.row(raw.headers["x-request-id"])
    assert row["cache_write_tokens"] == 100 and row["total_tokens"] == 177

    tools = oc.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]},
            }
        ],
    )
    call = tools.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert tools.choices[0].finish_reason == "tool_calls"


def test_openai_stream_through_translation(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    chunks = list(
        stack.client().chat.completions.create(
            model="claude-test",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Claude "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]


def test_untranslatable_is_a_400_in_the_clients_shape(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    with pytest.raises(openai.BadRequestError) as bad:
        stack.client().chat.completions.create(
            model="claude-test", messages=[{"role": "user", "content": "hi"}], n=3
        )
    assert bad.value.code == "untranslatable"
    with pytest.raises(anthropic.BadRequestError) as bad2:
        client(stack).messages.create(
            model="vllm-model",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"top_k": 5},
        )
    assert "top_k" in str(bad2.value.body)
    with pytest.raises(openai.BadRequestError) as refused:  # the upstream's own 400, re-shaped
        stack.client().chat.completions.create(
            model="claude-test", messages=[{"role": "user", "content": "PLEASE-FAIL"}]
        )
    assert refused.value.body == {
        "message": "messages: bad turn order",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(anthropic.BadRequestError):  # count_tokens has no OpenAI equivalent
        client(stack).messages.count_tokens(
            model="vllm-model", messages=[{"role": "user", "content": "hi"}]
        )


# -- anthropic SDK → OpenAI-only upstream ---------------------------------------------------


def test_anthropic_client_through_translation(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    vllm = stack.a
    message = client(stack).messages.create(
        model="vllm-model",
        max_tokens=50,
        system="Be brief.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            }
        ],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from upstream"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 8 and message.usage.cache_read_input_tokens == 3
    sent = orjson.loads(vllm.seen[-1].body)
    assert vllm.seen[-1].path == "/v1/chat/completions"
    assert vllm.seen[-1].headers["authorization"] == f"Bearer {vllm.api_key}"
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x.test/a.png"},
    }


def test_anthropic_tools_through_translation(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    vllm = stack.a

    async def tool_call(request: web.Request, body: bytes) -> web.StreamResponse:
        answer: dict[str, Any] = {
            "id": "c1",
            "object": "chat.completion",
            "model": "vllm-model",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }
        return web.json_response(answer)

    vllm.behaviour.respond = tool_call
    try:
        message = client(stack).messages.create(
            model="vllm-model",
            max_tokens=50,
            tools=[WEATHER],  # type: ignore[list-item]
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "7C"}],
                },
            ],
        )
    finally:
        vllm.behaviour.respond = None
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Oslo"} and block.id == "call_9"
    sent = orjson.loads(vllm.seen[-1].body)
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "toolu_1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "7C"}


def test_anthropic_stream_through_translation(rig: tuple[Stack, FakeAnthropic]) -> None:
    stack, _ = rig
    with client(stack).messages.stream(
        model="vllm-model", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text == "Hello from upstream Hello from "
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5
    sent = orjson.loads(stack.a.seen[-1].body)
    assert sent["stream_options"] == {"include_usage": True}
    row = stack.row(request_id)
    assert row["prompt_tokens"] == 11 and row["completion_tokens"] == 5
    assert row["error_type"] is None
