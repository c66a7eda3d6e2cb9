"""Long prompts (what agents send, up to megabytes) through the real gateway: the client's
bytes reach the upstream as they were sent, with only what Tollway must add spliced in."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson

from .fixtures_gateway import Stack, make_key

USAGE = b'"stream_options":{"include_usage":true}'
MB = 1024 * 1024


def conversation(size: int) -> list[dict[str, Any]]:
    """An agent-like conversation of about `size` bytes: many turns, tool calls, code with
    quotes and backslashes, non-ASCII text."""
    code = 'def f(x):\n\treturn "a\\\\b" + x  # café 数据 😀\n' * 20
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are an agent. " * 50}]
    n = 0
    while len(orjson.dumps(messages)) < size:
        call = {"id": f"c{n}", "type": "function", "function": {"name": "read", "arguments": "{}"}}
        messages += [
            {"role": "user", "content": f"Step {n}: read the next file, please. ✓"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": code},
        ]
        n += 1
    messages.append({"role": "user", "content": "Now fix it."})
    return messages


def post(stack: Stack, body: bytes, key: str | None = None) -> httpx.Response:
    return httpx.post(
        stack.url + "/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key or stack.key}", "Content-Type": "application/json"},
        timeout=30,
    )


def test_long_stream_asks_for_usage_and_the_client_sees_none(fresh: Stack) -> None:
    messages = conversation(MB)
    chunks = list(
        fresh.client().chat.completions.create(model="gpt-test", messages=messages, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert len(chunks) == 5 and all(c.usage is None for c in chunks)
    sent = fresh.a.seen[-1].body
    assert len(sent) > MB and sent.startswith(b"{" + USAGE + b",")
    data = orjson.loads(sent)
    assert data["stream_options"] == {"include_usage": True} and data["messages"] == messages
    row = fresh.last_row()
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 5, 16)


def test_long_stream_bytes_pass_unchanged_after_the_splice(fresh: Stack) -> None:
    # Spacing and escapes as some clients write them (json.dumps defaults: ASCII escapes).
    body = json.dumps({"model": "gpt-test", "messages": conversation(MB), "stream": True}).encode()
    with httpx.stream(
        "POST",
        fresh.url + "/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {fresh.key}", "Content-Type": "application/json"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        answer = resp.read()
    assert fresh.a.seen[-1].body == b"{" + USAGE + b"," + body[1:]
    assert b'"usage"' not in answer and answer.endswith(b"data: [DONE]\n\n")
    assert fresh.last_row()["total_tokens"] == 16


def test_long_request_reaches_the_upstream_byte_for_byte(fresh: Stack) -> None:
    body = orjson.dumps({"model": "gpt-test", "messages": conversation(MB)})
    resp = post(fresh, body)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
    assert fresh.a.seen[-1].body == body
    assert fresh.last_row()["total_tokens"] is not None


def test_long_request_to_an_alias_is_renamed_in_place(fresh: Stack) -> None:
    body = orjson.dumps({"model": "alias-model", "messages": conversation(MB), "stream": True})
    with httpx.stream(
        "POST",
        fresh.url + "/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {fresh.key}", "Content-Type": "application/json"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        resp.read()
    renamed = body.replace(b'"model":"alias-model"', b'"model":"gpt-test"', 1)
    assert fresh.a.seen[-1].body == b"{" + USAGE + b"," + renamed[1:]


def test_a_repeated_model_is_routed_by_the_last_and_sent_once(fresh: Stack) -> None:
    """A parser that keeps the first of two `model` members must not see another model
    than the one Tollway checked against the key and accounted."""
    narrow = make_key(fresh.db_url, models=["other-model"])
    msgs = orjson.dumps(conversation(64 * 1024))
    smuggled = b'{"model":"gpt-test","messages":' + msgs + b',"model":"other-model"}'
    resp = post(fresh, smuggled, narrow)
    assert resp.status_code == 200
    sent = fresh.b.seen[-1].body  # `other-model` is served by b only
    members: list[list[tuple[str, Any]]] = []
    json.loads(sent, object_pairs_hook=lambda p: members.append(p) or dict(p))
    assert [v for k, v in members[-1] if k == "model"] == ["other-model"]
    assert not fresh.a.seen
    # The other order: the last one is what counts, and this key may not use it.
    denied = b'{"model":"other-model","messages":' + msgs + b',"model":"gpt-test"}'
    resp = post(fresh, denied, narrow)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "model_not_allowed"
    assert not fresh.a.seen
