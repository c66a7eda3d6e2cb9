"""The load for long streams: open `--streams` streaming requests (ramped over `--ramp`
seconds), read every chunk, and record how long each took from the upstream's stamp
(`"bench_ns"`, `time.monotonic_ns()` when written, bench/stream_upstream.py) to its arrival.

    python bench/stream_client.py --port 9001 --streams 5000 --ramp 10 --chunks 1500 \
        --deadline 60 --key sk-... [--path /v1/chat/completions]

One stream per connection. Raw asyncio protocols on uvloop and httptools' response parser;
delays go into a histogram (20 us buckets to 200 ms, then 1 ms), not a list, so 15 million
chunks cost no memory. Several of these run side by side (bench/long_streams.py), each
printing `OPEN ...` once all its streams have their response head (or failed) and one
`RESULT {json}` line at the end. It stops by itself after `--deadline` seconds: streams not
finished by then are counted as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections import Counter
from typing import cast

import httptools
import uvloop

STAMP_KEY = b'"bench_ns":'
FINE_NS = 20_000  # 20 us buckets ...
FINE_BUCKETS = 10_000
FINE_LIMIT_NS = FINE_NS * FINE_BUCKETS  # ... up to 200 ms
COARSE_NS = 1_000_000  # then 1 ms buckets
MAX_BUCKET = FINE_BUCKETS + 600_000  # up to 10 minutes


def bucket_of(delay_ns: int) -> int:
    if delay_ns < FINE_LIMIT_NS:
        return max(0, delay_ns // FINE_NS)
    return min(MAX_BUCKET, FINE_BUCKETS + (delay_ns - FINE_LIMIT_NS) // COARSE_NS)


def bucket_ms(b: int) -> float:
    """The middle of bucket `b`, in milliseconds."""
    if b < FINE_BUCKETS:
        return (b + 0.5) * FINE_NS / 1e6
    return (FINE_LIMIT_NS + (b - FINE_BUCKETS + 0.5) * COARSE_NS) / 1e6


def percentile_ms(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bucket_ms(b)
    return bucket_ms(max(hist))


class Run:
    """This process's streams and what they saw."""

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.args = args
        self.loop = loop
        body = b'{"model":"bench-model","messages":[{"role":"user","content":"hi"}],"stream":true'
        if args.max_tokens:  # the upstream sends at most this many chunks
            body += b',"max_tokens":%d' % args.max_tokens
        body += b"}"
        self.request = (
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
            % (args.path.encode(), args.port, args.key.encode(), len(body), body)
        )
        self.hist: list[int] = [0] * (MAX_BUCKET + 1)
        self.t0 = args.epoch_ns or time.monotonic_ns()
        # Per second since the start: chunks and the largest delay (where a knee shows).
        self.seconds: dict[int, list[int]] = {}
        self.streams: list[Stream] = []
        self.errors: Counter[str] = Counter()
        self.error_sample = ""
        self.headed = 0
        self.headed_ok = 0  # ... with status 200: open streams
        self.unheaded_failed = 0  # failed before a response head (towards "all open")
        self.ended = 0  # finished well or failed
        self.open_said = False
        self.done: asyncio.Future[None] = loop.create_future()

    async def open_all(self) -> None:
        n, ramp = self.args.streams, self.args.ramp
        start = self.loop.time()
        opened = 0
        while opened < n:
            due = n if ramp <= 0 else min(n, int((self.loop.time() - start) / ramp * n) + 1)
            for _ in range(due - opened):
                stream = Stream(self)
                self.streams.append(stream)
                self.loop.create_task(self._connect(stream))
            opened = due
            await asyncio.sleep(0.01)

    async def _connect(self, stream: Stream) -> None:
        stream.t_open = time.monotonic()
        try:
            await self.loop.create_connection(lambda: stream, "127.0.0.1", self.args.port)
        except OSError as exc:
            self.fail(stream, f"connect: {type(exc).__name__}: {exc.strerror or exc}")

    def head(self, stream: Stream) -> None:
        self.headed += 1
        if stream.status == 200:
            self.headed_ok += 1
        self._maybe_open()

    def fail(self, stream: Stream, why: str, sample: str = "") -> None:
        if stream.over:
            return
        stream.over = True
        self.errors[why] += 1
        if sample and not self.error_sample:
            self.error_sample = sample[:300]
        if stream.status == 0:  # never got a head: counts towards "all open" too
            self._maybe_open(extra=1)
        self._end()

    def finish(self, stream: Stream) -> None:
        if stream.over:
            return
        stream.over = True
        stream.t_end = time.monotonic()
        if stream.chunks != self.args.chunks or not stream.saw_done:
            self.errors["incomplete stream"] += 1
        self._end()

    def _maybe_open(self, extra: int = 0) -> None:
        self.unheaded_failed += extra
        if not self.open_said and self.headed + self.unheaded_failed >= self.args.streams:
            self.open_said = True
            print(f"OPEN {self.headed} {self.unheaded_failed}", flush=True)

    def _end(self) -> None:
        self.ended += 1
        if self.ended >= self.args.streams and not self.done.done():
            self.done.set_result(None)

    def result(self, wall: float) -> dict[str, object]:
        for stream in self.streams:
            if not stream.over:
                self.errors["unfinished at deadline"] += 1
        if len(self.streams) < self.args.streams:
            self.errors["not opened by the deadline"] += self.args.streams - len(self.streams)
        heads = [s.t_head - s.t_open for s in self.streams if s.t_head]
        lengths = [s.t_end - s.t_head for s in self.streams if s.t_end and s.t_head]
        ok = sum(1 for s in self.streams if s.t_end and s.chunks == self.args.chunks and s.saw_done)
        return {
            "streams": self.args.streams,
            "ok": ok,
            "headed": self.headed,
            "headed_ok": self.headed_ok,
            "chunks": sum(s.chunks for s in self.streams),
            "hist": {b: c for b, c in enumerate(self.hist) if c},
            "errors": dict(self.errors),
            "error_sample": self.error_sample,
            "head_p50_ms": statistics.median(heads) * 1000 if heads else None,
            "head_max_ms": max(heads) * 1000 if heads else None,
            "length_p50_s": statistics.median(lengths) if lengths else None,
            "length_max_s": max(lengths) if lengths else None,
            "per_second": {s: [n, worst / 1e6] for s, (n, worst) in sorted(self.seconds.items())},
            "cpu_s": time.process_time(),
            "wall_s": wall,
        }


class Stream(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.chunks = 0
        self.saw_done = False
        self.over = False
        self.pending = b""
        self.now = 0
        self.t_open = self.t_head = self.t_end = 0.0
        self.error_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.now = time.monotonic_ns()  # one arrival time for everything in this read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.run.fail(self, f"bad HTTP: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.over:
            why = "closed before the end" if self.status else "closed before an answer"
            self.run.fail(self, why)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.t_head = time.monotonic()
        self.run.head(self)

    def on_body(self, body: bytes) -> None:
        if self.status != 200:
            self.error_body += body[:300]
            return
        buf = self.pending + body if self.pending else body
        cut = buf.rfind(b"\n\n") + 2
        if cut < 2:
            self.pending = buf
            return
        ready, self.pending = buf[:cut], buf[cut:]
        run = self.run
        hist, now, key, skip = run.hist, self.now, STAMP_KEY, len(STAMP_KEY)
        i = ready.find(key)
        worst = n = 0
        while i >= 0:
            j = ready.find(b"}", i)
            delay = now - int(ready[i + skip : j])
            b = delay // FINE_NS
            if b >= FINE_BUCKETS or b < 0:
                b = bucket_of(max(0, delay))
            hist[b] += 1
            n += 1
            if delay > worst:
                worst = delay
            i = ready.find(key, j)
        if n:
            self.chunks += n
            sec = run.seconds.setdefault((now - run.t0) // 1_000_000_000, [0, 0])
            sec[0] += n
            if worst > sec[1]:
                sec[1] = worst
        if b"[DONE]" in ready:
            self.saw_done = True

    def on_message_complete(self) -> None:
        if self.status != 200:
            body = self.error_body.decode(errors="replace")
            self.run.fail(self, f"HTTP {self.status}", f"{self.status} {body}")
        else:
            self.run.finish(self)
        self.close()


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    run = Run(args, loop)
    started = time.monotonic()
    opener = loop.create_task(run.open_all())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(run.done), timeout=args.deadline)
    opener.cancel()
    if not run.open_said:
        print(f"OPEN {run.headed} -1", flush=True)  # never all open: say so, once
    result = run.result(time.monotonic() - started)
    for stream in run.streams:
        stream.close()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--key", required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--ramp", type=float, default=0.0, help="seconds to open them all over")
    p.add_argument("--chunks", type=int, required=True, help="content chunks a stream brings")
    p.add_argument("--deadline", type=float, required=True, help="seconds before giving up")
    p.add_argument("--max-tokens", type=int, default=0, help="ask for at most this many chunks")
    p.add_argument("--epoch-ns", type=int, default=0, help="monotonic ns the seconds count from")
    args = p.parse_args()
    uvloop.run(main_async(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
