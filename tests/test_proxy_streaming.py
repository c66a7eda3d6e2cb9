"""Streaming: chunk by chunk, usage exact, usage chunk hidden unless asked for."""

from __future__ import annotations

import threading

import httpx
import orjson

from .fixtures_gateway import Stack

MESSAGES = [{"role": "user", "content": "hi"}]


def test_stream_without_usage_request_hides_usage_chunk_but_records_it(fresh: Stack) -> None:
    chunks = list(
        fresh.client().chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    )
    assert [c.choices[0].delta.content for c in chunks] == [
        "Hello ",
        "from ",
        "upstream ",
        "Hello ",
        "from ",
    ]
    assert all(c.usage is None for c in chunks)
    sent = orjson.loads(fresh.a.seen[-1].body)
    assert sent["stream_options"] == {"include_usage": True}
    row = fresh.last_row()
    assert row["stream"] is True or row["stream"] == 1
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 5, 16)
    assert row["ttft_ms"] is not None and row["error_type"] is None


def test_stream_with_usage_request_passes_usage_chunk(fresh: Stack) -> None:
    chunks = list(
        fresh.client().chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 16
    sent = orjson.loads(fresh.a.seen[-1].body)
    assert sent["stream_options"] == {"include_usage": True}
    assert fresh.last_row()["total_tokens"] == 16


async def test_async_client_streams(fresh: Stack) -> None:
    client = fresh.aclient()
    stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Hello from upstream Hello from "
    await client.close()


def test_first_chunk_arrives_before_upstream_finishes(fresh: Stack) -> None:
    fresh.a.behaviour.chunks = 4
    fresh.a.behaviour.chunk_delay = 0.5
    fresh.a.stream_finished.clear()  # a stream of an earlier test may have ended just now
    stream = fresh.client().chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True
    )
    first = next(iter(stream))
    # The upstream still has three chunks and 1.5 s to go: nothing was buffered.
    assert first.choices[0].delta.content == "Hello "
    assert not fresh.a.stream_finished.is_set()
    rest = list(stream)
    assert len(rest) == 3 and fresh.a.stream_finished.is_set()


def test_client_disconnect_cancels_upstream_and_records_partial_usage(fresh: Stack) -> None:
    fresh.a.behaviour.chunks = 50
    fresh.a.behaviour.chunk_delay = 0.1
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            fresh.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {fresh.key}"},
            json={"model": "gpt-test", "messages": MESSAGES, "stream": True},
        ) as resp,
    ):
        lines = resp.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert got[0].startswith("data: ")
    assert fresh.a.cancelled.wait(5), "upstream request was not cancelled"
    assert not fresh.a.stream_finished.is_set()
    row = fresh.last_row()
    assert row["error_type"] == "client_disconnected"
    assert row["completion_tokens"] is not None and 2 <= row["completion_tokens"] < 50


def test_upstream_breaking_mid_stream_ends_with_error_event(fresh: Stack) -> None:
    fresh.a.behaviour.mode = "break_stream"
    with httpx.Client(timeout=10) as http:
        resp = http.post(
            fresh.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {fresh.key}"},
            json={"model": "gpt-test", "messages": MESSAGES, "stream": True},
        )
    events = [e for e in resp.text.split("\n\n") if e]
    assert resp.status_code == 200
    assert len(events) == 3
    error = orjson.loads(events[-1][len("data: ") :])
    assert error["error"]["code"] == "upstream_stream_error"
    row = fresh.row(resp.headers["x-request-id"])
    assert row["error_type"] == "upstream_stream_error"
    assert row["completion_tokens"] == 2


def test_concurrent_streams_keep_their_own_usage(fresh: Stack) -> None:
    errors: list[BaseException] = []

    def one() -> None:
        try:
            list(
                fresh.client().chat.completions.create(
                    model="gpt-test", messages=MESSAGES, stream=True
                )
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = [fresh.row(s.headers["X-Request-Id"]) for s in fresh.a.seen[-16:]]
    assert all(r["total_tokens"] == 16 for r in rows)
    assert len({r["request_id"] for r in rows}) == 16
