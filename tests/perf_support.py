"""Upstream answers for tests/test_perf_guards.py, built byte by byte: odd but valid JSON, binary
bodies written in uneven pieces, long SSE streams cut mid-line, and token counts of their own
for every request."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from .fake_upstream import Responder

# Valid JSON that no serialiser would write back the same way: spacing, tabs and CRLF between
# tokens, escapes next to raw UTF-8, keys out of order, numbers in forms a parser normalises.
ODD_JSON = (
    b'{\n  "zeta_first" : true ,\t"id":"chatcmpl-odd",\r\n'
    b'  "object":"chat.completion", "created":1700000000,"model":"gpt-test",\n'
    b'  "numbers": [1.0e10, 1E-7, -0.0, 1.50, 0.1e+2, 12345678901234567890123, 5],\n'
    b'  "escaped": "caf\\u00e9 \\ud83d\\ude00 \\u0000 \\/ \\"q\\" \\t",\n'
    b'  "raw": "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",\n'
    b'  "choices":[ {"index":0,"message":{"role":"assistant","content":"\\u2615 \xe2\x98\x95"},'
    b'"finish_reason":"stop","logprobs":null} ],\n'
    b'  "usage" : { "total_tokens" : 10, "prompt_tokens" : 7, "completion_tokens" : 3 }\n'
    b"}   \n"
)
ODD_USAGE = (7, 3, 10)

# An upstream error that must reach the client as it was written.
ODD_ERROR = (
    b'{ "error" : {"message":"Invalid value for \\u0027temperature\\u0027: 3.0e0 \xe2\x80\x94 '
    b'too high","type":"invalid_request_error","param":"temperature","code":null} }\n'
)


def large_json(target: int = 1_000_000) -> bytes:
    """An embeddings-like answer of about `target` bytes, floats in many spellings."""
    rng = random.Random(7)
    forms = ["{:.17g}", "{:.3e}", "{:.6f}", "{:.1E}", "{:g}"]
    parts: list[bytes] = [b'{"object":"list","data":[']
    size, index = 0, 0
    while size < target:
        values = ", ".join(rng.choice(forms).format(rng.uniform(-2, 2)) for _ in range(64))
        item = f'{{"object":"embedding", "index":{index},"embedding":[{values}]}}'.encode()
        parts.append((b",\n" if index else b"") + item)
        size += len(item)
        index += 1
    parts.append(
        b'],"model":"gpt-test","usage":{"prompt_tokens":123456,"total_tokens":123456},'
        + '"note":"caf\u00e9"}\n'.encode()
    )
    return b"".join(parts)


def fixed(
    body: bytes, status: int = 200, content_type: str = "application/json", **headers: str
) -> Responder:
    """Always the same bytes, status and headers."""

    async def respond(request: web.Request, raw: bytes) -> web.StreamResponse:
        return web.Response(
            body=body, status=status, headers={"Content-Type": content_type, **headers}
        )

    return respond


async def _write_all(
    request: web.Request, resp: web.StreamResponse, pieces: list[bytes], pause: bool
) -> web.StreamResponse:
    await resp.prepare(request)
    for piece in pieces:
        await resp.write(piece)
        if pause and not piece.endswith(b"\n"):
            # Let this piece leave on its own, so the gateway really reads a cut line.
            await asyncio.sleep(0.001)
    await resp.write_eof()
    return resp


def chunked(pieces: list[bytes], content_type: str, **headers: str) -> Responder:
    """A body in uneven writes, chunked, with no Content-Length."""

    async def respond(request: web.Request, raw: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, **headers})
        resp.enable_chunked_encoding()
        return await _write_all(request, resp, pieces, pause=True)

    return respond


def cut(data: bytes, rng: random.Random, forced: Sequence[int] = ()) -> list[bytes]:
    """`data` in pieces: single bytes, a few bytes (cutting lines), whole events and many
    events at once, plus cuts at the `forced` offsets."""
    points = set(forced)
    at = 0
    while at < len(data):
        r = rng.random()
        if r < 0.35:
            at += rng.randint(1, 40)
        elif r < 0.65:
            at += rng.randint(100, 400)
        else:
            at += rng.randint(1000, 6000)
        points.add(at)
    bounds = [0, *sorted(p for p in points if 0 < p < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def piece(i: int) -> str:
    return f"[{i}] caf\u00e9 \u2615\n"


def sse_stream(
    n: int, usage: dict[str, int], crlf_tail: bool
) -> tuple[list[bytes], list[bytes], int]:
    """The events of a chat stream (without their blank-line ends), the same with their ends,
    and the index of the usage-only event. Every 7th event ends with CRLF; so do the usage
    event and [DONE] when `crlf_tail`. A few SSE comments (as OpenRouter sends) sit between."""
    events: list[bytes] = []
    for i in range(n):
        chunk: dict[str, Any] = {
            "id": "chatcmpl-seq",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": {"content": piece(i)}, "finish_reason": None}],
            "usage": None,
            "seq": i,
        }
        if i == n - 1:
            chunk["choices"][0]["finish_reason"] = "stop"
        events.append(b"data: " + orjson.dumps(chunk))
        if i % 97 == 50:
            events.append(b": PROCESSING")
    usage_at = len(events)
    final = {
        "id": "chatcmpl-seq",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-test",
        "choices": [],
        "usage": usage,
    }
    events.append(b"data: " + orjson.dumps(final))
    events.append(b"data: [DONE]")
    framed = []
    for j, event in enumerate(events):
        crlf = j % 7 == 3 or (crlf_tail and j >= usage_at)
        framed.append(event.replace(b"\n", b"\r\n") + b"\r\n\r\n" if crlf else event + b"\n\n")
    return events, framed, usage_at


def sse(framed: list[bytes], seed: int) -> Responder:
    """The framed events cut into uneven writes; every 11th event is also cut inside its
    blank-line end."""
    data = b"".join(framed)
    forced, at = [], 0
    for j, event in enumerate(framed):
        at += len(event)
        if j % 11 == 5:
            forced.append(at - (2 if event.endswith(b"\r\n\r\n") else 1))
    pieces = cut(data, random.Random(seed), forced)

    async def respond(request: web.Request, raw: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        return await _write_all(request, resp, pieces, pause=True)

    return respond


def events_of(body: bytes) -> list[bytes]:
    """SSE events as sent (blank-line ends and CRLF taken out)."""
    text = body.replace(b"\r\n", b"\n")
    return [e for e in text.split(b"\n\n") if e]


class TokenBook:
    """Answers every chat request with token numbers of its own (from the number in the
    message), and remembers which request id got which numbers."""

    def __init__(self) -> None:
        self.issued: dict[str, tuple[int, int]] = {}
        self.repeated: list[str] = []

    @staticmethod
    def tokens(n: int) -> tuple[int, int]:
        return 1000 + n, 1 + (n * 7919) % 503

    async def __call__(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        data = orjson.loads(raw)
        n = int(data["messages"][0]["content"].rsplit(" ", 1)[1])
        prompt, completion = self.tokens(n)
        rid = request.headers["X-Request-Id"]
        if rid in self.issued:
            self.repeated.append(rid)
        self.issued[rid] = (prompt, completion)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if not data.get("stream"):
            body = {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-test",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer {n}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        include = (data.get("stream_options") or {}).get("include_usage") is True
        frames = []
        for word in ("answer", " ", str(n)):
            chunk = {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "gpt-test",
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            frames.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if include:
            final = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0}
            final.update({"model": "gpt-test", "choices": [], "usage": usage})
            frames.append(b"data: " + orjson.dumps(final) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        return await _write_all(request, resp, frames, pause=False)


def held(first: bytes, rest: bytes, release: threading.Event, done: threading.Event) -> Responder:
    """An SSE stream that sends `first`, waits for the test to say it arrived (3 s at most,
    under the Stack's read timeout), then sends `rest`; `done` says the upstream finished."""

    async def respond(request: web.Request, raw: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(first)
        for _ in range(300):
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        await resp.write(rest)
        await resp.write_eof()
        done.set()
        return resp

    return respond
