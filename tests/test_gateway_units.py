"""The hot path's pieces on their own: key cache, usage sink, SSE tracker, body parsing."""

from __future__ import annotations

import asyncio

import pytest

from tollway.core.errors import GatewayError
from tollway.core.secrets import hash_key
from tollway.core.types import KeyRecord, UsageEvent
from tollway.gateway.auth import KeyCache, extract_key, one_by_one
from tollway.gateway.body import body_for, inspect
from tollway.gateway.sse import SSETracker, normalize_usage
from tollway.gateway.usage import UsageSink


async def test_key_cache_hits_misses_negative_and_single_flight() -> None:
    calls: list[str] = []
    record = KeyRecord(id=1, name="k", prefix="tw-abc")

    async def loader(digest: str) -> KeyRecord | None:
        calls.append(digest)
        await asyncio.sleep(0.01)
        return record if digest == hash_key("tw-good") else None

    cache = KeyCache(one_by_one(loader), ttl=60, negative_ttl=60)
    got = await asyncio.gather(*(cache.lookup("tw-good") for _ in range(20)))
    assert all(g is record for g in got) and len(calls) == 1
    assert await cache.lookup("tw-bad") is None
    assert await cache.lookup("tw-bad") is None
    assert len(calls) == 2  # the unknown key was cached too
    cache.clear()
    await cache.lookup("tw-good")
    assert len(calls) == 3


async def test_key_cache_loader_failure_reaches_every_waiter_and_is_not_cached() -> None:
    fail = [True]

    async def loader(digest: str) -> KeyRecord | None:
        await asyncio.sleep(0.01)
        if fail[0]:
            raise RuntimeError("db down")
        return None

    cache = KeyCache(one_by_one(loader))
    results = await asyncio.gather(
        *(cache.lookup("tw-x") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    fail[0] = False
    assert await cache.lookup("tw-x") is None


def test_extract_key_forms() -> None:
    assert extract_key([(b"authorization", b"Bearer tw-1")]) == "tw-1"
    assert extract_key([(b"authorization", b"bearer  tw-2 ")]) == "tw-2"
    assert extract_key([(b"x-api-key", b"tw-3")]) == "tw-3"
    assert extract_key([(b"authorization", b"Basic abc")]) is None
    assert extract_key([]) is None


def event(n: int) -> UsageEvent:
    return UsageEvent(ts=float(n), request_id=str(n), key_id=1, method="POST", endpoint="/v1/x")


async def test_usage_sink_batches_retries_and_flushes_on_stop() -> None:
    written: list[list[str]] = []
    failures = [1]

    async def writer(batch: list[UsageEvent]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("db hiccup")
        written.append([e.request_id for e in batch])

    sink = UsageSink(writer, batch_size=3, interval=0.01)
    sink.start()
    for n in range(7):
        sink.emit(event(n))
    await sink.stop()
    flat = [r for batch in written for r in batch]
    assert flat == [str(n) for n in range(7)]  # nothing lost, order kept, despite the failure
    assert max(len(b) for b in written) <= 3
    assert sink.pending() == 0 and sink.written == 7


async def test_usage_sink_does_not_chase_a_slow_write_with_tiny_batches() -> None:
    """Events arriving while a batch is written wait for the next interval (or a full
    batch): each written batch pays a whole transaction."""
    sizes: list[int] = []
    loop = asyncio.get_running_loop()
    started: list[float] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def slow_writer(batch: list[UsageEvent]) -> None:
        started.append(loop.time())
        sizes.append(len(batch))
        (second if first.is_set() else first).set()
        await asyncio.sleep(0.05)

    sink = UsageSink(slow_writer, batch_size=1000, interval=0.2)
    sink.start()
    try:
        sink.emit(event(0))
        await asyncio.wait_for(first.wait(), 5)
        for n in range(1, 6):  # while the first batch is being written
            sink.emit(event(n))
            await asyncio.sleep(0.005)
        await asyncio.wait_for(second.wait(), 5)
    finally:
        await sink.stop()
    assert sizes[:2] == [1, 5]
    assert started[1] - started[0] >= 0.15  # the next interval, not right after the write


async def test_usage_sink_drops_oldest_only_beyond_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tollway.gateway.usage as usage_mod

    monkeypatch.setattr(usage_mod, "MAX_BUFFERED", 5)

    async def writer(batch: list[UsageEvent]) -> None:
        raise RuntimeError("db down")

    sink = UsageSink(writer, batch_size=100, interval=10)
    for n in range(8):
        sink.emit(event(n))
    assert await sink._write_batch(8) == 0  # one failed attempt (flush itself retries forever)
    assert sink.pending() == 5 and sink.dropped == 3


def test_sse_tracker_reassembles_split_events_and_hides_usage_chunk() -> None:
    t = SSETracker(hide_usage_chunk=True)
    out = t.feed(b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n')
    out += t.feed(b'\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: {"choi')
    out += t.feed(
        b'ces":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}\n\n'
    )
    out += t.feed(b"data: [DONE]\n\n")
    assert out.count(b"data:") == 3 and b'"prompt_tokens"' not in out
    assert t.usage == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert t.saw_done and t.content_chunks == 2


def test_sse_tracker_keeps_usage_chunk_when_asked_and_reads_responses_api() -> None:
    t = SSETracker(hide_usage_chunk=False)
    done = (
        b'event: response.completed\ndata: {"type":"response.completed","response":'
        b'{"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12,'
        b'"output_tokens_details":{"reasoning_tokens":3}}}}'
    )
    assert t.feed(done) == b""  # incomplete event waits
    assert t.tail() == done + b"\n\n"
    assert t.usage == {
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "total_tokens": 12,
        "reasoning_tokens": 3,
    }
    t2 = SSETracker(hide_usage_chunk=True)
    assert t2.feed(b'data: not json with "usage"\n\n') == b'data: not json with "usage"\n\n'
    assert t2.feed(b'data: ["usage"]\n\n') == b'data: ["usage"]\n\n'


def test_normalize_usage_shapes() -> None:
    assert normalize_usage(None) is None
    assert normalize_usage({}) is None
    assert normalize_usage({"prompt_tokens": 3}) == {"prompt_tokens": 3, "total_tokens": 3}
    assert normalize_usage(
        {"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1}}
    ) == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cached_tokens": 1}


def test_inspect_and_body_for() -> None:
    info = inspect(
        "/v1/chat/completions", b"application/json; charset=utf-8", b'{"model":"m","stream":true}'
    )
    assert info.model == "m" and info.stream and info.inject_usage
    assert (
        body_for(info, b"", "up-m")
        == b'{"model":"up-m","stream":true,"stream_options":{"include_usage":true}}'
    )
    raw = b'{"model":"m"}'
    plain = inspect("/v1/embeddings", b"application/json", raw)
    assert body_for(plain, raw, "m") is raw  # untouched bytes when nothing changes
    other = inspect("/v1/responses", b"application/json", b'{"model":"m","stream":true}')
    assert other.stream and not other.inject_usage
    assert inspect("/v1/x", b"text/plain", b"hello").model is None
    assert not inspect("/v1/x", None, b"[1]").is_json
    assert inspect("/v1/x", None, b"").model is None
    with pytest.raises(GatewayError):
        inspect("/v1/x", None, b"{bad")
