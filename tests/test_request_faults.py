"""The upstream and client fault matrix: each test drives one fault through a real Tollway
(uvicorn + Tollway's protocol), real fake upstreams and real clients, then counts requests
answered, usage rows written, rows with the right status/error_type, and duplicates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from aiohttp import web

from .faults_support import MESSAGES, figure, sse_events, wait_until
from .fixtures_gateway import Stack, make_key, write_config
from .servers import GatewayThread

TIMEOUT = 1.0  # first-byte and idle timeouts of this module's gateway (seconds)


@pytest.fixture(scope="module")
def fstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`m` is served by a (tried first: weighted 100:1) and b."""
    tmp = tmp_path_factory.mktemp("faults")
    s = Stack(
        tmp,
        upstreams=[],
        upstream_first_byte_timeout=TIMEOUT,
        upstream_read_timeout=TIMEOUT,
    )
    # The fake upstreams' ports are known now: write the real config and restart on it.
    write_config(
        s.config,
        [
            {"name": "a", "base_url": s.a.base_url, "api_key": s.a.api_key, "models": ["m"]},
            {
                "name": "b",
                "base_url": s.b.base_url,
                "api_key": s.b.api_key,
                "models": ["m"],
                "weight": 0.01,
            },
        ],
        routing={"strategy": "weighted"},
    )
    s.gateway.stop()
    s.gateway = GatewayThread(s.settings).start()
    yield s
    s.stop()


@pytest.fixture
def fs(fstack: Stack) -> Stack:
    fstack.reset()
    return fstack


def _rows_for(stack: Stack, ids: list[str]) -> list[dict[str, Any]]:
    wanted = set(ids)
    rows: list[dict[str, Any]] = []

    def all_there() -> bool:
        nonlocal rows
        rows = [r for r in stack.usage_rows(0) if r["request_id"] in wanted]
        return len({r["request_id"] for r in rows}) >= len(wanted)

    wait_until(all_there)
    return rows


def _post(stack: Stack, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return httpx.post(
        stack.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key or stack.key}"},
        timeout=20,
    )


def _chat(stack: Stack, n: int) -> tuple[list[httpx.Response], list[dict[str, Any]]]:
    answers = [_post(stack, {"model": "m", "messages": MESSAGES}) for _ in range(n)]
    rows = _rows_for(stack, [r.headers["x-request-id"] for r in answers])
    return answers, rows


def test_upstream_refused_fails_over(fs: Stack) -> None:
    rt = fs.gateway.app.runtime
    assert rt is not None
    a = next(u for u in rt.pool.upstreams if u.name == "a")
    real, a.base_url = a.base_url, "http://127.0.0.1:9/v1"  # nothing listens on port 9
    try:
        answers, rows = _chat(fs, 5)
    finally:
        a.base_url = real
    right = sum(
        r["status"] == 200 and r["error_type"] is None and r["upstream"] == "b" for r in rows
    )
    assert figure("upstream refused", len(answers), rows, right) == 0
    assert [r.status_code for r in answers] == [200] * 5 and right == 5
    assert rows[0]["attempts"] == 2  # refused by a, answered by b


def test_upstream_hung_before_headers_fails_over_after_first_byte_timeout(fs: Stack) -> None:
    fs.a.behaviour.delay = 30.0  # far longer than the test: only the timeout can end it
    answers, rows = _chat(fs, 3)
    right = sum(r["status"] == 200 and r["upstream"] == "b" for r in rows)
    assert figure("upstream hung before headers", len(answers), rows, right) == 0
    assert [r.status_code for r in answers] == [200] * 3 and right == 3
    assert rows[0]["attempts"] == 2
    wait_until(lambda: fs.a.abandoned >= 1)  # the hung request's connection was closed


def test_upstream_500_and_429(fs: Stack) -> None:
    fs.a.behaviour.mode = "error"  # 500 from a: b answers
    answers, rows = _chat(fs, 3)
    right = sum(r["status"] == 200 and r["upstream"] == "b" for r in rows)
    assert figure("upstream 500, second healthy", len(answers), rows, right) == 0
    assert right == 3
    fs.reset()
    fs.a.behaviour.mode = fs.b.behaviour.mode = "rate_limited"  # both 429: passes through
    fs.a.behaviour.retry_after = "7"
    answers, rows = _chat(fs, 3)
    right = sum(r["status"] == 429 and r["error_type"] == "upstream_error" for r in rows)
    assert figure("upstream 429 everywhere", len(answers), rows, right) == 0
    assert [r.status_code for r in answers] == [429] * 3 and right == 3
    fs.reset()
    fs.a.behaviour.mode = fs.b.behaviour.mode = "error"
    answers, rows = _chat(fs, 3)
    right = sum(r["status"] == 500 and r["error_type"] == "upstream_error" for r in rows)
    assert figure("upstream 500 everywhere", len(answers), rows, right) == 0
    assert [r.status_code for r in answers] == [500] * 3 and right == 3
    assert answers[0].json()["error"]["message"] == "upstream exploded"


def _stream_lines(stack: Stack, key: str | None = None) -> tuple[str, list[str]]:
    with httpx.stream(
        "POST",
        stack.url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {key or stack.key}"},
        timeout=20,
    ) as resp:
        assert resp.status_code == 200
        return resp.headers["x-request-id"], [line for line in resp.iter_lines() if line]


def test_upstream_cut_mid_stream_ends_with_error_event(fs: Stack) -> None:
    fs.a.behaviour.mode = fs.b.behaviour.mode = "break_stream"
    got = [_stream_lines(fs) for _ in range(3)]
    rows = _rows_for(fs, [rid for rid, _ in got])
    codes = [sse_events(lines)[-1]["error"]["code"] for _, lines in got]
    right = sum(r["status"] == 200 and r["error_type"] == "upstream_stream_error" for r in rows)
    assert figure("upstream cut mid-stream", len(got), rows, right) == 0
    assert codes == ["upstream_stream_error"] * 3 and right == 3


def test_upstream_idle_mid_stream_ends_with_timeout_event(fs: Stack) -> None:
    fs.a.behaviour.chunks = 3
    fs.a.behaviour.chunk_delay = 3 * TIMEOUT  # silent longer than the idle timeout
    rid, lines = _stream_lines(fs)
    rows = _rows_for(fs, [rid])
    events = sse_events(lines)
    right = sum(r["status"] == 200 and r["error_type"] == "upstream_idle_timeout" for r in rows)
    assert figure("upstream idle mid-stream", 1, rows, right) == 0
    assert events[0]["choices"][0]["delta"]["content"] == "Hello "
    assert events[-1]["error"]["code"] == "upstream_idle_timeout" and right == 1
    wait_until(lambda: fs.a.streams_cut == 1)  # its connection was closed


async def _stalled_json(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    await resp.write(b'{"id": "x",')
    await asyncio.sleep(3 * TIMEOUT)  # silent past the idle timeout
    return resp


def test_upstream_idle_mid_body_is_a_504(fs: Stack) -> None:
    fs.a.behaviour.respond = _stalled_json
    answers, rows = _chat(fs, 1)
    error = answers[0].json()["error"]
    right = sum(r["status"] == 504 and r["error_type"] == "upstream_idle_timeout" for r in rows)
    assert figure("upstream idle mid-body", 1, rows, right) == 0
    assert answers[0].status_code == 504 and error["code"] == "upstream_idle_timeout"
    assert right == 1


async def _malformed_sse(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: {not json\n\ngarbage line\n\ndata: {}\n\n")
    await resp.write_eof()
    return resp


def test_malformed_sse_passes_through_and_is_recorded_incomplete(fs: Stack) -> None:
    fs.a.behaviour.respond = _malformed_sse
    got = [_stream_lines(fs) for _ in range(3)]
    rows = _rows_for(fs, [rid for rid, _ in got])
    right = sum(
        r["status"] == 200 and r["error_type"] == "upstream_stream_incomplete" for r in rows
    )
    assert figure("malformed SSE", len(got), rows, right) == 0
    assert got[0][1][0] == "data: {not json" and right == 3


async def _invalid_json(request: web.Request, body: bytes) -> web.StreamResponse:
    return web.Response(body=b'{"id": "x", "choices": [', content_type="application/json")


def test_invalid_json_with_200_passes_through_without_tokens(fs: Stack) -> None:
    fs.a.behaviour.respond = _invalid_json
    with pytest.raises(ValueError):  # the SDK cannot parse it either (JSONDecodeError)
        fs.client().chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    answers, rows = _chat(fs, 3)
    right = sum(r["status"] == 200 and r["total_tokens"] is None for r in rows)
    assert figure("invalid JSON body with 200", len(answers), rows, right) == 0
    assert answers[0].content == b'{"id": "x", "choices": [' and right == 3


def test_client_gone_before_first_byte_cancels_upstream_and_frees_its_slot(fs: Stack) -> None:
    key = make_key(fs.db_url, max_parallel=1)
    fs.a.behaviour.delay = 30.0
    n = 20
    for _ in range(n):  # one at a time on a max_parallel=1 key: a kept slot would be a 429
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                fs.url + "/v1/chat/completions",
                json={"model": "m", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key}"},
                timeout=httpx.Timeout(5, read=0.25),
            )
    wait_until(lambda: fs.a.abandoned == n)  # the upstream saw every connection close
    wait_until(lambda: len([r for r in fs.usage_rows(0) if r["status"] == 499]) >= n)
    rows = [r for r in fs.usage_rows(0) if r["status"] == 499]
    right = sum(r["error_type"] == "client_disconnected" and r["upstream"] is None for r in rows)
    assert figure("client gone before first byte", 0, rows, right) == 0
    assert right == n
    fs.a.behaviour.delay = 0
    assert _post(fs, {"model": "m", "messages": MESSAGES}, key).status_code == 200


def test_client_gone_mid_stream_and_after_last_byte(fs: Stack) -> None:
    fs.a.behaviour.chunks = 40
    fs.a.behaviour.chunk_delay = 0.05
    ids = []

    def leave_mid_stream() -> str:
        with httpx.stream(
            "POST",
            fs.url + "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {fs.key}"},
            timeout=20,
        ) as resp:
            lines = resp.iter_lines()
            next(lines), next(lines)
            return resp.headers["x-request-id"]

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: leave_mid_stream(), range(4)))
    rows = _rows_for(fs, ids)
    right = sum(r["status"] == 200 and r["error_type"] == "client_disconnected" for r in rows)
    assert figure("client gone mid-stream", len(ids), rows, right) == 0
    assert right == 4
    wait_until(lambda: fs.a.streams_cut == 4)

    fs.reset()
    got = [_stream_lines(fs) for _ in range(3)]  # read to the end, then the client closes
    rows = _rows_for(fs, [rid for rid, _ in got])
    right = sum(r["status"] == 200 and r["error_type"] is None for r in rows)
    assert figure("client gone after last byte", len(got), rows, right) == 0
    assert right == 3 and got[0][1][-1] == "data: [DONE]"


def test_unexpected_exception_is_an_openai_500_with_the_request_id(
    fs: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    rt = fs.gateway.app.runtime
    assert rt is not None

    def boom(model: str | None) -> list[Any]:
        raise RuntimeError("a bug")

    real = rt.pool.candidates
    rt.pool.candidates = boom  # type: ignore[method-assign]
    try:
        resp = _post(fs, {"model": "m", "messages": MESSAGES})
    finally:
        rt.pool.candidates = real  # type: ignore[method-assign]
    rid = resp.headers["x-request-id"]
    error = resp.json()["error"]
    assert resp.status_code == 500 and resp.headers["content-type"] == "application/json"
    assert error["code"] == "internal_error" and error["type"] == "server_error"
    assert rid in error["message"]
    rows = _rows_for(fs, [rid])
    right = sum(r["status"] == 500 and r["error_type"] == "internal_error" for r in rows)
    assert figure("unexpected exception", 1, rows, right) == 0 and right == 1
    logged = [r for r in caplog.records if rid in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert fs.key not in caplog.text
