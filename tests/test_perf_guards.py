"""Guards for the hot path's optimisations, tested from the outside only: a real Tollway on a
socket, fake upstreams that control every byte, real clients. What a faster relay could break:
bodies re-serialised or cut, stream events lost, repeated or reordered, usage counted twice,
mixed up or lost under load, limits counted per worker process."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import select

from tollway.services import usage as usage_service
from tollway.store.db import create_engine
from tollway.store.tables import usage_records

from .fake_upstream import SPEECH_BYTES, FakeUpstream
from .fixtures_gateway import Stack, make_key, run_async, write_config
from .limits_support import REDIS_URL, drop_prefix, require_redis, unique_prefix
from .perf_support import (
    ODD_ERROR,
    ODD_JSON,
    ODD_USAGE,
    TokenBook,
    chunked,
    cut,
    events_of,
    fixed,
    held,
    large_json,
    piece,
    sse,
    sse_stream,
)
from .servers import GatewayProcess

MSG = [{"role": "user", "content": "hi"}]
CHAT = b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}'
LARGE = large_json()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def same_bytes(got: bytes, want: bytes) -> None:
    """Equal, or a short message saying where they part (a 1 MB diff helps nobody)."""
    if got == want:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    at = min(len(got), len(want)) if at is None else at
    raise AssertionError(
        f"{len(got)} bytes, expected {len(want)}; first difference at {at}: "
        f"got {got[max(0, at - 30) : at + 30]!r}, expected {want[max(0, at - 30) : at + 30]!r}"
    )


def tokens(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    return row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]


# --- byte-faithful pass-through -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "ctype", "usage"),
    [
        pytest.param(ODD_JSON, 200, "application/json", ODD_USAGE, id="odd-json"),
        pytest.param(
            ODD_JSON, 201, "application/json; charset=utf-8", ODD_USAGE, id="odd-json-201"
        ),
        pytest.param(LARGE, 200, "application/json", (123456, None, 123456), id="1mb-json"),
        pytest.param(ODD_ERROR, 400, "application/json", None, id="error-400"),
        pytest.param(ODD_ERROR, 404, "application/json", None, id="error-404"),
        pytest.param(ODD_ERROR, 422, "application/json", None, id="error-422"),
        pytest.param(ODD_ERROR, 500, "application/json", None, id="error-500"),
    ],
)
def test_json_answers_reach_the_client_byte_for_byte(
    fresh: Stack, body: bytes, status: int, ctype: str, usage: tuple[Any, ...] | None
) -> None:
    fresh.a.behaviour.respond = fixed(body, status, ctype, **{"X-Upstream-Foo": "bar; baz=1"})
    with httpx.Client(timeout=30) as http:
        r = http.post(
            fresh.url + "/v1/chat/completions",
            content=CHAT,
            headers={**auth(fresh.key), "Content-Type": "application/json"},
        )
    assert r.status_code == status
    same_bytes(r.content, body)
    assert r.headers["content-type"] == ctype
    assert r.headers["x-upstream-foo"] == "bar; baz=1"
    if "content-length" in r.headers:
        assert int(r.headers["content-length"]) == len(body)
    row = fresh.row(r.headers["x-request-id"])
    assert row["status"] == status
    if usage is not None:
        assert tokens(row) == usage and row["error_type"] is None
    else:
        assert row["error_type"] == "upstream_error"


def test_binary_answers_reach_the_client_byte_for_byte(fresh: Stack) -> None:
    speech = {"model": "gpt-test", "input": "hello", "voice": "alloy"}
    with httpx.Client(timeout=30, headers=auth(fresh.key)) as http:
        r = http.post(fresh.url + "/v1/audio/speech", json=speech)
        assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
        assert r.headers["content-length"] == str(len(SPEECH_BYTES))
        same_bytes(r.content, SPEECH_BYTES)

        # Chunked, no Content-Length, in uneven writes: every byte value, then noise.
        rng = random.Random(3)
        audio = bytes(range(256)) * 16 + rng.randbytes(300_000)
        fresh.a.behaviour.respond = chunked(
            cut(audio, rng), "audio/mpeg", **{"X-Upstream-Foo": "1"}
        )
        r = http.post(fresh.url + "/v1/audio/speech", json=speech)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    assert r.headers["x-upstream-foo"] == "1"
    assert r.headers.get("content-length", str(len(audio))) == str(len(audio))
    same_bytes(r.content, audio)


ODD_REQUEST = (
    b'{ "messages" : [{"role":"user","content":"caf\\u00e9 \xe2\x98\x95 \\ud83d\\ude00"}],\n'
    b'\t"model":"gpt-test", "temperature": 1.0e0, "n":1 , "metadata":{"b":"2","a":"1"},'
    b' "stream": false, "seed": 12345678901234567890123 }\r\n'
)
LARGE_REQUEST = (
    b'{"model": "gpt-test", "input": ['
    + b", ".join(b'"%d caf\xc3\xa9 \\u00e9 %s"' % (i, b"x" * 90) for i in range(10_000))
    + b"]}"
)


@pytest.mark.parametrize(
    ("path", "body", "ctype"),
    [
        pytest.param("/v1/chat/completions", ODD_REQUEST, "application/json", id="odd-json"),
        pytest.param("/v1/embeddings", LARGE_REQUEST, "application/json", id="1mb-json"),
        pytest.param(
            "/v1/uploads/upload-1/parts",
            bytes(range(256)) * 1024,
            "application/octet-stream",
            id="binary",
        ),
    ],
)
def test_request_body_reaches_the_upstream_byte_for_byte(
    fresh: Stack, path: str, body: bytes, ctype: str
) -> None:
    """No alias, not a stream: nothing to rewrite, so the upstream gets the client's bytes."""
    with httpx.Client(timeout=30) as http:
        r = http.post(
            fresh.url + path + "?x=1",
            content=body,
            headers={**auth(fresh.key), "Content-Type": ctype},
        )
    assert r.status_code == 200, r.text
    seen = fresh.a.seen[-1]
    assert (seen.method, seen.path, seen.query) == ("POST", path, "x=1")
    assert seen.headers["Content-Type"] == ctype
    same_bytes(seen.body, body)


# --- streaming: every event, in order, once -----------------------------------------------------

STREAM_USAGE = {"prompt_tokens": 4321, "completion_tokens": 500, "total_tokens": 4821}


def stream_request(client_usage: bool) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "gpt-test", "messages": MSG, "stream": True}
    if client_usage:
        request["stream_options"] = {"include_usage": True}
    return request


@pytest.mark.parametrize("crlf_tail", [False, True], ids=["lf-tail", "crlf-tail"])
@pytest.mark.parametrize("client_usage", [False, True], ids=["usage-hidden", "usage-asked"])
def test_long_stream_arrives_whole_in_order(
    fresh: Stack, client_usage: bool, crlf_tail: bool
) -> None:
    """crlf-tail: the usage chunk and [DONE] end in CRLF CRLF, as sse-starlette writes them."""
    events, framed, usage_at = sse_stream(500, STREAM_USAGE, crlf_tail)
    fresh.a.behaviour.respond = sse(framed, seed=int(client_usage) * 2 + int(crlf_tail))
    with httpx.Client(timeout=30) as http:
        r = http.post(
            fresh.url + "/v1/chat/completions",
            json=stream_request(client_usage),
            headers=auth(fresh.key),
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    got = events_of(r.content)
    seqs = [orjson.loads(e[6:])["seq"] for e in got if e.startswith(b"data: {") and b'"seq"' in e]
    assert seqs == list(range(500))
    # Every event exactly as sent; only what the client did not ask for is gone: the usage
    # chunk, and the `"usage":null` member that asking for usage added to every chunk.
    hidden = [e.replace(b',"usage":null', b"") for e in events[:usage_at] + events[usage_at + 1 :]]
    assert got == (events if client_usage else hidden)
    row = fresh.row(r.headers["x-request-id"])
    assert tokens(row) == (4321, 500, 4821)
    assert row["error_type"] is None and row["status"] == 200


@pytest.mark.parametrize("client_usage", [False, True], ids=["usage-hidden", "usage-asked"])
def test_sdk_reassembles_the_exact_text_of_a_long_stream(fresh: Stack, client_usage: bool) -> None:
    _, framed, _ = sse_stream(500, STREAM_USAGE, crlf_tail=False)
    fresh.a.behaviour.respond = sse(framed, seed=10 + int(client_usage))
    request = stream_request(client_usage)
    chunks = list(fresh.client().chat.completions.create(**request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(piece(i) for i in range(500))
    with_usage = [c for c in chunks if c.usage is not None]
    if client_usage:
        assert with_usage == [chunks[-1]] and chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 4821
    else:
        assert with_usage == []
        assert len(chunks) == 500


def test_crlf_stream_is_relayed_as_it_comes(fresh: Stack) -> None:
    """An upstream whose events all end in CRLF CRLF (valid SSE): the first event must reach
    the client while the upstream still holds the rest, and usage must be counted."""
    _, framed, _ = sse_stream(5, STREAM_USAGE, crlf_tail=True)
    framed = [e.replace(b"\r\n\r\n", b"\n\n").replace(b"\n\n", b"\r\n\r\n") for e in framed]
    release, done = threading.Event(), threading.Event()
    fresh.a.behaviour.respond = held(framed[0], b"".join(framed[1:]), release, done)
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            fresh.url + "/v1/chat/completions",
            json=stream_request(False),
            headers=auth(fresh.key),
        ) as r,
    ):
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        arrived_early = not done.is_set()
        release.set()
        rest = [line for line in lines if line]
    assert first.startswith("data: {") and orjson.loads(first[6:])["seq"] == 0
    assert arrived_early, "the gateway held the first event until the upstream had finished"
    assert rest[-1] == "data: [DONE]" and not any('"usage":{' in line for line in rest)
    assert tokens(fresh.row(r.headers["x-request-id"])) == (4321, 500, 4821)


# --- usage under 64-way concurrency -------------------------------------------------------------

REQUESTS, CLIENTS = 640, 64


@dataclass
class Outcome:
    request_id: str
    n: int
    kind: int  # 0 JSON, 1 stream (usage hidden), 2 stream with usage asked for
    usage: tuple[int, int] | None  # what the client was shown


async def one_request(client: openai.AsyncOpenAI, n: int) -> Outcome:
    kind = n % 3
    messages: Any = [{"role": "user", "content": f"request {n}"}]
    chats = client.chat.completions.with_raw_response
    if kind == 0:
        raw = await chats.create(model="gpt-test", messages=messages)
        reply = raw.parse()
        assert reply.usage is not None and reply.choices[0].message.content == f"answer {n}"
        return Outcome(
            raw.headers["x-request-id"],
            n,
            kind,
            (reply.usage.prompt_tokens, reply.usage.completion_tokens),
        )
    extra: Any = {"stream_options": {"include_usage": True}} if kind == 2 else {}
    raw = await chats.create(model="gpt-test", messages=messages, stream=True, **extra)
    text, shown = "", []
    async for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            shown.append((chunk.usage.prompt_tokens, chunk.usage.completion_tokens))
    assert text == f"answer {n}"
    assert len(shown) == (1 if kind == 2 else 0)
    return Outcome(raw.headers["x-request-id"], n, kind, shown[0] if shown else None)


async def many_clients(url: str, key: str) -> list[Outcome]:
    todo = list(range(REQUESTS))
    random.Random(5).shuffle(todo)
    done: list[Outcome] = []

    async def client_loop() -> None:
        client = openai.AsyncOpenAI(api_key=key, base_url=url + "/v1", max_retries=0, timeout=60)
        try:
            while todo:
                done.append(await one_request(client, todo.pop()))
        finally:
            await client.close()

    await asyncio.gather(*(client_loop() for _ in range(CLIENTS)))
    return done


def test_usage_is_exact_for_640_requests_from_64_concurrent_clients(fresh: Stack) -> None:
    book = TokenBook()
    fresh.a.behaviour.respond = book
    key = make_key(fresh.db_url)
    outcomes = run_async(many_clients(fresh.url, key))

    ids = [o.request_id for o in outcomes]
    assert len(outcomes) == REQUESTS and len(set(ids)) == REQUESTS
    assert book.repeated == [] and set(book.issued) == set(ids)
    for o in outcomes:
        # The client's request id is the one the gateway sent upstream for this very request.
        assert book.issued[o.request_id] == TokenBook.tokens(o.n)
        if o.kind != 1:
            assert o.usage == TokenBook.tokens(o.n)

    wanted = set(ids)
    deadline = time.monotonic() + 20
    while True:
        rows = [r for r in fresh.usage_rows(0) if r["request_id"] in wanted]
        if len(rows) >= REQUESTS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # several flush intervals: a second copy of any row would be written by now
    everything = fresh.usage_rows(0)
    rows = [r for r in everything if r["request_id"] in wanted]
    assert Counter(r["request_id"] for r in rows) == Counter(ids)
    by_id = {o.request_id: o for o in outcomes}
    for row in rows:
        o = by_id[row["request_id"]]
        prompt, completion = TokenBook.tokens(o.n)
        assert tokens(row) == (prompt, completion, prompt + completion), (o, row)
        assert bool(row["stream"]) == (o.kind != 0)
        assert row["status"] == 200 and row["error_type"] is None
    key_ids = {r["key_id"] for r in rows}
    assert len(key_ids) == 1
    key_id = key_ids.pop()
    assert sum(r["key_id"] == key_id for r in everything) == REQUESTS

    async def key_totals() -> usage_service.UsageStats:
        engine = create_engine(fresh.db_url)
        try:
            return await usage_service.totals(engine, key_id=key_id)
        finally:
            await engine.dispose()

    totals = run_async(key_totals())
    prompt_sum = sum(TokenBook.tokens(n)[0] for n in range(REQUESTS))
    completion_sum = sum(TokenBook.tokens(n)[1] for n in range(REQUESTS))
    assert (totals.requests, totals.errors) == (REQUESTS, 0)
    assert (totals.prompt_tokens, totals.completion_tokens, totals.total_tokens) == (
        prompt_sum,
        completion_sum,
        prompt_sum + completion_sum,
    )


# --- limits exact across two worker processes ---------------------------------------------------


@dataclass
class Workers:
    proc: GatewayProcess
    upstream: FakeUpstream
    db_url: str


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """`tollway serve` with TOLLWAY_WORKERS=2, limits in Redis, a fresh SQLite database."""
    require_redis()
    tmp = tmp_path_factory.mktemp("workers")
    up = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    config = write_config(
        tmp / "tollway.yaml",
        [{"name": "a", "base_url": up.base_url, "api_key": up.api_key, "models": ["gpt-test"]}],
    )
    db_url = f"sqlite+aiosqlite:///{tmp / 'tollway.db'}"
    prefix = unique_prefix()
    env = {
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_REDIS_URL": REDIS_URL,
        "TOLLWAY_REDIS_PREFIX": prefix,
        "TOLLWAY_WORKERS": "2",
        "TOLLWAY_LOG_LEVEL": "warning",
        "TOLLWAY_USAGE_FLUSH_INTERVAL": "0.05",
    }
    proc = GatewayProcess(env, tmp)
    try:
        proc.start()
        wait_for_both_workers(proc.url)
        # Still ours: had its port been taken, another server could have answered /healthz.
        assert proc.proc is not None and proc.proc.poll() is None, proc.log.read_text()
        yield Workers(proc, up, db_url)
    finally:
        proc.stop()
        up.stop()
        drop_prefix(prefix)


def worker_of(response: httpx.Response) -> str:
    """Request ids start with 16 hex digits drawn once per process (tollway.core.ids)."""
    return response.headers["x-request-id"][:16]


def wait_for_both_workers(url: str, timeout: float = 30.0) -> None:
    """Until two different processes have answered (each worker starts on its own)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while len(seen) < 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(seen)} worker(s) answered")
        for r in run_async(burst(url + "/healthz", "", 20, method="GET")):
            seen.add(worker_of(r))


async def burst(
    url: str, key: str, n: int, method: str = "POST", body: bytes = CHAT
) -> list[httpx.Response]:
    """n requests at once, each on its own connection."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    headers = {**auth(key), "Content-Type": "application/json"} if key else {}
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        calls = [
            http.request(method, url, headers=headers, content=body if method == "POST" else None)
            for _ in range(n)
        ]
        return await asyncio.gather(*calls)


def refusals(responses: list[httpx.Response], code: str) -> list[dict[str, Any]]:
    errors = []
    for r in responses:
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
        errors.append(err)
    return errors


def key_rows(db_url: str, request_ids: set[str], timeout: float = 10.0) -> list[Any]:
    async def fetch() -> list[Any]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(usage_records).where(usage_records.c.request_id.in_(request_ids))
                )
                return list(rows)
        finally:
            await engine.dispose()

    deadline = time.monotonic() + timeout
    while True:
        rows: list[Any] = run_async(fetch())
        if len(rows) >= len(request_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.mark.redis
def test_rpm_exact_across_two_workers(workers: Workers) -> None:
    key = make_key(workers.db_url, rpm=50)
    before = len(workers.upstream.seen)
    responses = run_async(burst(workers.proc.url + "/v1/chat/completions", key, 150))
    assert len({worker_of(r) for r in responses}) == 2  # both workers took some
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == 50 and len(refused) == 100
    for err in refusals(refused, "rate_limit_exceeded"):
        assert err["type"] == "requests"
        assert "(rpm): limit 50, used 50" in err["message"]
    assert all(r.headers["retry-after"].isdigit() for r in refused)
    assert len(workers.upstream.seen) - before == 50  # refused requests never left the gateway


@pytest.mark.redis
def test_token_quota_exact_across_two_workers(workers: Workers) -> None:
    # 20 answers of 14 tokens each: all admitted (at most 266 used before the last one), then
    # the quota of 280 is used up exactly, whichever worker counted which answer. The kernel
    # may hand a whole burst to one worker on a busy machine: then the round proves nothing
    # about two workers, and another key tries again (at most 5 rounds).
    url = workers.proc.url + "/v1/chat/completions"
    for _ in range(5):
        key = make_key(workers.db_url, token_quota=280)
        first = run_async(burst(url, key, 20))
        assert [r.status_code for r in first] == [200] * 20
        # The quota is charged before the usage row is queued, so once all 20 rows are
        # written every charge has landed.
        rows = key_rows(workers.db_url, {r.headers["x-request-id"] for r in first})
        assert sorted(r.total_tokens for r in rows) == [14] * 20
        second = run_async(burst(url, key, 40))
        for err in refusals(second, "insufficient_quota"):
            assert "280 of 280 tokens used" in err["message"]
        if len({worker_of(r) for r in first + second}) == 2:
            return
    raise AssertionError("5 rounds of 60 requests never reached both workers")
