"""Request bodies edited in their bytes (usage option, model rename) and read without a full
parse: the upstream must get valid JSON meaning exactly what Tollway routed and accounted."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tollway.core.errors import GatewayError
from tollway.gateway.body import body_for, inspect
from tollway.gateway.body_splice import model_value_span, with_usage_option

CHAT = "/v1/chat/completions"
JSON = b"application/json"
USAGE = b'"stream_options":{"include_usage":true}'


def top(body: bytes) -> list[tuple[str, Any]]:
    """The top-level members in order, with repeats (nested objects' members left out)."""
    found: list[list[tuple[str, Any]]] = []
    json.loads(body, object_pairs_hook=lambda p: found.append(p) or dict(p))
    return found[-1]  # the outermost object is completed last


def pairs(body: bytes) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in top(body) if k in ("model", "stream", "stream_options")]


def send(body: bytes, upstream_model: str | None = None, path: str = CHAT) -> tuple[Any, bytes]:
    info = inspect(path, JSON, body)
    out = body_for(info, body, upstream_model if upstream_model is not None else info.model)
    return info, out


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","stream":true}',
        b'  \n\t{"model":"m","stream":true}\r\n',
        b'{ "model" : "m" , "stream" : true }',
        b'{\n  "model": "m",\n  "stream": true\n}\n',
        b"{}",
        b"{ \n }",
        '{"model":"m","stream":true,"messages":[{"content":"é 数据 😀 \\u00e9 \\"q\\""}]}'.encode(),
    ],
)
def test_usage_option_goes_first_and_the_rest_is_untouched(body: bytes) -> None:
    out = with_usage_option(body)
    assert json.loads(out) == {**json.loads(body), "stream_options": {"include_usage": True}}
    start = len(body) - len(body.lstrip())
    assert out[: start + 1] == body[: start + 1]  # leading whitespace and the brace kept
    assert out[start + 1 :].startswith(USAGE)
    assert out.endswith(body[start + 1 :])  # every byte after the brace as the client sent


def test_usage_option_refuses_what_is_not_an_object() -> None:
    for body in (b"[1]", b"\xef\xbb\xbf{}", b""):
        with pytest.raises(ValueError):
            with_usage_option(body)


def test_stream_without_options_is_spliced_not_reserialised() -> None:
    body = '{"model":"m", "stream":true, "messages":[{"role":"user","content":"ü 1.0"}]}'.encode()
    info, out = send(body)
    assert info.inject_usage and not info.canonical and info.full is None  # never parsed
    assert out == b"{" + USAGE + b"," + body[1:]
    assert orjson.loads(out)["messages"][0]["content"] == "ü 1.0"


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        ({"include_usage": True}, {"include_usage": True}),  # the client's own: untouched
        ({"include_usage": False}, {"include_usage": True}),
        ({}, {"include_usage": True}),
        ({"other": 1}, {"other": 1, "include_usage": True}),
        (None, {"include_usage": True}),
        (5, {"include_usage": True}),
        ("yes", {"include_usage": True}),
    ],
)
def test_existing_stream_options_are_merged(options: Any, sent: dict[str, Any]) -> None:
    body = orjson.dumps({"model": "m", "stream": True, "stream_options": options})
    info, out = send(body)
    assert info.client_wants_usage == (options == {"include_usage": True})
    if info.client_wants_usage:
        assert out is body
    assert pairs(out) == [("model", "m"), ("stream", True), ("stream_options", sent)]


def test_an_escaped_stream_options_name_counts_as_present() -> None:
    body = b'{"model":"m","stream":true,"stream_opti\\u006fns":{"include_usage":false}}'
    _, out = send(body)
    assert pairs(out) == [
        ("model", "m"),
        ("stream", True),
        ("stream_options", {"include_usage": True}),
    ]


def test_nothing_to_change_sends_the_clients_bytes() -> None:
    body = b'{"model":"m","tools":[{"model":"nested"}],"stream":false}'
    info, out = send(body)
    assert out is body and info.full is None
    assert send(b'{"model":"m","stream":true}', path="/v1/responses")[1] == (
        b'{"model":"m","stream":true}'  # no usage option outside chat and completions
    )


@pytest.mark.parametrize(
    ("body", "model", "stream"),
    [
        (b'{"model":"a","messages":[],"model":"b"}', "b", False),
        (b'{"mod\\u0065l":"a","model":"b"}', "b", False),
        (b'{"model":"b","m\\u006Fdel":"a"}', "a", False),
        (b'{"model":"m","stream":true,"stream":false}', "m", False),
        (b'{"model":"m","stream":false,"stream":true}', "m", True),
        (b'{"model":null,"model":"b"}', "b", False),
    ],
)
def test_repeated_members_are_routed_by_the_last_and_sent_once(
    body: bytes, model: str, stream: bool
) -> None:
    info, out = send(body)
    assert (info.model, info.stream, info.canonical) == (model, stream, True)
    names = [k for k, _ in top(out)]
    assert len(names) == len(set(names))  # whatever parser the upstream has, one reading
    assert dict(top(out))["model"] == model
    assert dict(top(out)).get("stream", False) is stream
    if stream:
        assert dict(top(out))["stream_options"] == {"include_usage": True}


def test_a_repeat_with_a_renamed_model_is_sent_once_renamed() -> None:
    _, out = send(b'{"model":"x","model":"alias","stream":true}', "real")
    assert top(out) == [
        ("model", "real"),
        ("stream", True),
        ("stream_options", {"include_usage": True}),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"alias","messages":[{"role":"user","content":"hi"}]}',
        b'{"messages":[],  "model"  :\n "alias" }',
        b'{"model":"alia\\u0073","messages":[]}',  # an escape in the value: not in the name
        '{"model":"alias","messages":[{"content":"é 数据 \\"alias\\" \\\\"}]}'.encode(),
    ],
)
def test_rename_is_spliced_when_the_name_occurs_once(body: bytes) -> None:
    info = inspect(CHAT, JSON, body)
    span = model_value_span(body, "alias")
    assert span is not None and orjson.loads(body[span[0] : span[1]]) == "alias"
    out = body_for(info, body, "gpt-real")
    assert out == body[: span[0]] + b'"gpt-real"' + body[span[1] :]
    assert orjson.loads(out) == {**orjson.loads(body), "model": "gpt-real"}
    assert info.full is None


@pytest.mark.parametrize(
    "body",
    [
        # A nested "model" key: the name occurs twice, the text alone cannot tell which.
        b'{"model":"alias","tools":[{"parameters":{"properties":{"model":{"type":"string"}}}}]}',
        b'{"tools":[{"model":"alias"}],"model":"alias"}',
        # A string ending in `"model` (an escaped quote before it) matches the name too.
        b'{"messages":[{"content":"say \\"model"}],"model":"alias"}',
        # \u006X anywhere: a letter of the name could be hiding behind it.
        b'{"model":"alias","messages":[{"content":"\\u006d"}]}',
        b'{"m\\u006fdel":"alias","messages":[{"content":"\\"model\\": x"}]}',
    ],
)
def test_rename_falls_back_to_reserialising_when_the_text_is_ambiguous(body: bytes) -> None:
    assert model_value_span(body, "alias") is None
    _, out = send(body, "gpt-real")
    assert orjson.loads(out) == {**orjson.loads(body), "model": "gpt-real"}
    assert [k for k, _ in top(out)].count("model") == 1


def test_rename_and_usage_option_together() -> None:
    body = b'{"model":"alias","stream":true,"messages":[]}'
    info, out = send(body, "gpt-real")
    assert out == b"{" + USAGE + b',"model":"gpt-real","stream":true,"messages":[]}'
    assert body_for(info, body, "gpt-real") == out  # the span is remembered per request
    assert body_for(info, body, None) == b"{" + USAGE + b"," + body[1:]


def test_invalid_bodies_are_refused_as_before() -> None:
    for body in (b"{bad", b'{"model":"m",}', b"\xef\xbb\xbf{}", b'{"model":"m"} x'):
        with pytest.raises(GatewayError) as err:
            inspect(CHAT, JSON, body)
        assert err.value.status == 400 and err.value.code == "invalid_json"
    with pytest.raises(GatewayError):
        inspect(CHAT, JSON, b"[1]")
    assert not inspect(CHAT, None, b"[1]").is_json
    with pytest.raises(GatewayError) as err:
        inspect(CHAT, JSON, b'{"model":"\xff"}')  # the routed members' UTF-8 is checked
    assert err.value.code == "invalid_json"
    with pytest.raises(GatewayError) as err:
        inspect(CHAT, JSON, b'{"model":5}')
    assert err.value.param == "model"


def test_skipped_members_are_not_decoded() -> None:
    # Invalid UTF-8 in a message is the upstream's to judge: its bytes pass as they came.
    body = b'{"model":"m","messages":[{"content":"\xff\xfe"}]}'
    info, out = send(body)
    assert out is body and info.model == "m"
    # A number orjson cannot hold passes too; only a full parse (the cache, translation,
    # a rename the text cannot place) refuses it, as before.
    big = b'{"model":"alias","x":1e400,"tools":[{"model":1}]}'
    info = inspect(CHAT, JSON, big)
    assert body_for(info, big, "alias") is big
    with pytest.raises(GatewayError):
        body_for(info, big, "gpt-real")


def test_deep_nesting() -> None:
    # Deep, but within what the reader takes: relayed as it came.
    deep = b'{"model":"m","x":' + b"[" * 300 + b"]" * 300 + b',"stream":true}'
    info, out = send(deep)
    assert info.model == "m" and out == b"{" + USAGE + b"," + deep[1:]
    # Deeper than the reader takes but not the full parse: decided by the full parse, and
    # sent re-serialised (repeats cannot be ruled out) -- which orjson refuses past 255.
    deeper = b'{"model":"m","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    info = inspect(CHAT, JSON, deeper)
    assert info.model == "m" and info.canonical
    with pytest.raises(GatewayError) as err:
        body_for(info, deeper, "m")
    assert err.value.status == 400
    with pytest.raises(GatewayError):
        inspect(CHAT, JSON, b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}")
