"""Streaming: how long a gateway holds the upstream's first bytes before the client gets them.

A slow SSE upstream and the client live in this one process, on one event loop, so both ends
are timed with the same clock (time.perf_counter_ns). Per sample:

1. the client sends a streaming chat completion through the target (a new connection each,
   `Connection: close`, so the end of the answer is simply EOF);
2. the upstream, once it has the whole request, takes t0 and writes its first bytes: the
   response head and the first SSE event in one write;
3. the client takes t1 when the first bytes arrive, and t2 when an SSE `data:` event has
   arrived; only then does the upstream send the rest of the stream (so nothing later can be
   mistaken for the first event), then the usage chunk and `[DONE]`.

first byte = t1 - t0, first event = t2 - t0. Against the upstream itself (`direct`) this is the
floor of the method (loopback and one event loop); through a gateway it adds the relay's hold.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass

from fake_upstream import _chunk, _delta
from proc import HOST

FIRST_EVENT = f"data: {_chunk([_delta({'role': 'assistant', 'content': 'Hello'})])}\n\n"
REST_EVENTS = "".join(
    f"data: {event}\n\n"
    for event in (
        _chunk([_delta({"content": " there"})]),
        _chunk([_delta({}, "stop")]),
        _chunk([], usage={"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}),
        "[DONE]",
    )
)
HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
SAMPLE_TIMEOUT = 10.0  # seconds for one streamed answer


def _chunked(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class SlowUpstream:
    """A tiny HTTP/1.1 server (keep-alive, Content-Length or chunked request bodies).

    Raw asyncio rather than a framework: the head and the first event must leave in exactly
    one write, at a time we take ourselves."""

    def __init__(self) -> None:
        self.t0 = 0
        self.seen = asyncio.Event()  # set by the client when the first event has arrived
        self.server: asyncio.Server | None = None
        self.conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, port)

    async def close(self) -> None:
        """Stop listening, end the proxies' idle keep-alive connections, let handlers finish
        (a handler still waiting when the loop closes would be cancelled, noisily)."""
        if self.server is not None:
            self.server.close()
        for writer in self.conns.values():
            writer.close()
        if self.conns:
            await asyncio.wait(list(self.conns), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.conns[task] = writer
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            del self.conns[task]
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(int(headers.get("content-length", "0")))
        self.seen.clear()
        self.t0 = time.perf_counter_ns()
        writer.write(HEAD + _chunked(FIRST_EVENT))
        await writer.drain()
        try:
            await asyncio.wait_for(self.seen.wait(), SAMPLE_TIMEOUT)
        finally:
            writer.write(_chunked(REST_EVENTS) + b"0\r\n\r\n")
            await writer.drain()
        return headers.get("connection", "").lower() != "close"


@dataclass
class FirstByte:
    target: str
    samples: int
    errors: int
    first_byte_p50_ms: float | None
    first_byte_p99_ms: float | None
    first_event_p50_ms: float | None
    first_event_p99_ms: float | None


async def _sample(
    upstream: SlowUpstream, port: int, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        upstream.t0 = 0
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        buf, t1, t2 = b"", 0, 0
        while True:
            data = await reader.read(65536)
            now = time.perf_counter_ns()
            if not data:
                break
            t1 = t1 or now
            buf += data
            if not t2 and b"data:" in buf.partition(b"\r\n\r\n")[2]:
                t2 = now
                upstream.seen.set()
        ok = buf.startswith(b"HTTP/1.1 200") and b"[DONE]" in buf and t2 and upstream.t0
        if not ok:
            raise ValueError(f"bad answer: {buf[:200]!r}")
        return t1 - upstream.t0, t2 - upstream.t0
    finally:
        upstream.seen.set()  # never leave the upstream waiting
        writer.close()


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure_async(
    targets: list[tuple[str, int, str, dict[str, str], bytes]],
    slow_port: int,
    samples: int,
    warmup: int,
) -> list[FirstByte]:
    """targets: (name, port, path, headers, body). Each gets `warmup` discarded samples."""
    upstream = SlowUpstream()
    await upstream.start(slow_port)
    results = []
    try:
        for name, port, path, headers, body in targets:
            firsts: list[float] = []
            events: list[float] = []
            errors = 0
            for i in range(warmup + samples):
                try:
                    t1, t2 = await asyncio.wait_for(
                        _sample(upstream, port, path, headers, body), SAMPLE_TIMEOUT
                    )
                except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                    errors += i >= warmup
                    continue
                if i >= warmup:
                    firsts.append(t1 / 1e6)
                    events.append(t2 / 1e6)
            results.append(
                FirstByte(
                    target=name,
                    samples=len(events),
                    errors=errors,
                    first_byte_p50_ms=_pct(firsts, 50),
                    first_byte_p99_ms=_pct(firsts, 99),
                    first_event_p50_ms=_pct(events, 50),
                    first_event_p99_ms=_pct(events, 99),
                )
            )
    finally:
        await upstream.close()
    return results


def measure(
    targets: list[tuple[str, int, str, dict[str, str], bytes]],
    slow_port: int,
    samples: int,
    warmup: int = 20,
) -> list[FirstByte]:
    coro = measure_async(targets, slow_port, samples, warmup)
    try:
        import uvloop  # a lower floor for the method; plain asyncio works too
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def body_for(model: str) -> bytes:
    return json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        separators=(",", ":"),
    ).encode()
