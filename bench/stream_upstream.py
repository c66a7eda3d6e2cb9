"""A fake upstream for long streams: every streaming request gets `--seconds` x `--rate`
content chunks at `--rate` chunks a second, each stamped with `time.monotonic_ns()` when it is
written, so a client on the same machine (CLOCK_MONOTONIC is one clock for every process on
Linux) can tell how long the chunk took to reach it.

    python bench/stream_upstream.py --port 9000 --rate 50 --seconds 30 [--procs 2] \
        [--slots 10] [--lifetime 120]

Built to write a lot of chunks on little CPU: raw asyncio protocols on uvloop, no framework;
one timer per process ticks `--slots` times per chunk interval and writes to the streams of
one slot (streams join the slots in turn), so streams are spread over the interval instead of
all being written at once, and nothing per stream sleeps. `--procs`
processes share the port with SO_REUSEPORT (the kernel spreads connections over them).

`"max_tokens": N` in a request caps its stream at N content chunks (warm-up streams).
A stream whose reader lags (256 KiB unsent) is skipped on that tick rather than buffered
without end: its chunks come later, as from a real server whose writes block. A request
without `"stream":true` gets the canned completion at once. Every process exits by itself
after `--lifetime` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
import time
from typing import cast

import httptools
import uvloop
from fake_upstream import CHAT_COMPLETION

MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
STAMP_KEY = b'"bench_ns":'  # the member every content chunk carries (the client looks for it)
BACKLOG_LIMIT = 256 * 1024  # bytes unsent to one stream before it waits a tick

_BASE = b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
_BASE += b'"model":"bench-model","choices":'
FIRST = b"data: " + _BASE + b'[{"index":0,"delta":{"role":"assistant","content":""},'
FIRST += b'"finish_reason":null}]}\n\n'
CHUNK_HEAD = b"data: " + _BASE + b'[{"index":0,"delta":{"content":" tok"},'
CHUNK_HEAD += b'"finish_reason":null}],' + STAMP_KEY
CHUNK_TAIL = b"}\n\n"
LAST = (
    b"data: " + _BASE + b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: " + _BASE + b'[],"usage":{"prompt_tokens":8,"completion_tokens":%d,'
    b'"total_tokens":%d}}\n\n'
    b"data: [DONE]\n\n"
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
JSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(CHAT_COMPLETION), CHAT_COMPLETION.encode())
)


def framed(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Streams:
    """Every open stream of this process, in `slots` groups; one timer writes them all."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rate: float, chunks: int, slots: int):
        self.loop = loop
        self.chunks = chunks
        self.slots: list[dict[Conn, None]] = [{} for _ in range(slots)]
        self.tick_s = 1.0 / (rate * slots)
        self.turn = 0
        self.joined = 0
        self.start = loop.time()
        self.loop.call_at(self.start + self.tick_s, self._tick)

    def add(self, conn: Conn) -> None:
        # In turn, not by arrival: a burst of new streams is still spread over the interval.
        self.slots[self.joined % len(self.slots)][conn] = None
        self.joined += 1

    def remove(self, conn: Conn) -> None:
        for slot in self.slots:
            slot.pop(conn, None)

    def _tick(self) -> None:
        slot = self.slots[self.turn % len(self.slots)]
        self.turn += 1
        # An absolute schedule: a late tick does not push every later one back.
        self.loop.call_at(self.start + (self.turn + 1) * self.tick_s, self._tick)
        finished = []
        now = time.monotonic_ns
        for conn in slot:
            transport = conn.transport
            if transport is None or transport.is_closing():
                finished.append(conn)
                continue
            if transport.get_write_buffer_size() > BACKLOG_LIMIT:
                continue  # the reader lags: this chunk waits, as a blocked write would
            data = b"%b%d%b" % (CHUNK_HEAD, now(), CHUNK_TAIL)
            conn.left -= 1
            if conn.left > 0:
                transport.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                tail = LAST % (conn.total, conn.total + 8)
                transport.write(framed(data + tail) + b"0\r\n\r\n")
                finished.append(conn)
        for conn in finished:
            slot.pop(conn, None)


class Conn(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive), no pipelining."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.left = 0  # content chunks still to send
        self.total = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.streams.remove(self)
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        body = b"".join(self.body)
        if b'"stream":true' not in body and b'"stream": true' not in body:
            self.transport.write(JSON_ANSWER)
            return
        cap = MAX_TOKENS.search(body)
        self.left = min(self.streams.chunks, int(cap.group(1))) if cap else self.streams.chunks
        self.total = self.left
        self.transport.write(STREAM_HEAD + framed(FIRST))
        self.streams.add(self)


def serve(sock: socket.socket, rate: float, chunks: int, slots: int, lifetime: float) -> None:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    streams = Streams(loop, rate, chunks, slots)
    server = loop.run_until_complete(
        loop.create_server(lambda: Conn(streams), sock=sock, backlog=8192)
    )
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.call_later(lifetime, loop.stop)  # stops by itself, whatever happens to the harness
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


def listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8192)
    sock.setblocking(False)
    return sock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=50.0, help="content chunks per second")
    p.add_argument("--seconds", type=float, default=30.0, help="each stream's length")
    p.add_argument("--procs", type=int, default=1, help="processes sharing the port")
    p.add_argument("--slots", type=int, default=10, help="timer ticks per chunk interval")
    p.add_argument("--lifetime", type=float, default=600.0, help="exit after this many s")
    args = p.parse_args()
    chunks = max(1, round(args.rate * args.seconds))
    children = []
    for _ in range(args.procs - 1):
        pid = os.fork()
        if pid == 0:  # each process its own socket: SO_REUSEPORT spreads connections
            serve(listening_socket(args.port), args.rate, chunks, args.slots, args.lifetime)
            os._exit(0)
        children.append(pid)
    try:
        serve(listening_socket(args.port), args.rate, chunks, args.slots, args.lifetime)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    sys.exit(0)


if __name__ == "__main__":
    main()
