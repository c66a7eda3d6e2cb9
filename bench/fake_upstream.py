"""Canned OpenAI responses for the benchmark's fake upstream, plus a Python fallback server.

The benchmark prefers nginx (see ``run.py``) as the fake upstream, serving these exact bodies.
When nginx cannot be installed, this module can serve them itself:

    python bench/fake_upstream.py PORT

That fallback is a single Python process and may become the bottleneck; ``run.py`` says so.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MODEL = "bench-model"
STREAM_HEADER = "x-bench-stream"  # value "1" selects the SSE variant

_BASE = {"id": "chatcmpl-bench", "created": 1700000000, "model": MODEL}
_USAGE = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


CHAT_COMPLETION = _dumps(
    {
        **_BASE,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there"},
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }
)


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
    return _dumps({**_BASE, "object": "chat.completion.chunk", "choices": choices, **extra})


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


# A few content chunks, a finish chunk, a usage-only chunk (choices: []), then [DONE].
_EVENTS = [
    _chunk([_delta({"role": "assistant", "content": ""})]),
    _chunk([_delta({"content": "Hello"})]),
    _chunk([_delta({"content": " there"})]),
    _chunk([_delta({}, "stop")]),
    _chunk([], usage=_USAGE),
    "[DONE]",
]
CHAT_COMPLETION_SSE = "".join(f"data: {event}\n\n" for event in _EVENTS)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI app answering every HTTP request with the canned completion."""
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        more = (await receive()).get("more_body", False)
    stream = (STREAM_HEADER.encode(), b"1") in scope["headers"]
    body = (CHAT_COMPLETION_SSE if stream else CHAT_COMPLETION).encode()
    ctype = b"text/event-stream" if stream else b"application/json"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
