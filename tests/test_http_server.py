"""The coalescing transport under Tollway's uvicorn protocol: the writes of one loop turn leave
as one write, in order; close sends what is pending first; abort drops it; everything else is
the real transport's. (Every gateway test also runs through it: tests/servers.py.)"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tollway.gateway.http_server import CoalescingTransport

from .fixtures_gateway import Stack


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name)


def wrap(rec: Recorder) -> CoalescingTransport:
    return CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_one_turn_one_write_in_order() -> None:
    rec = Recorder()
    t = wrap(rec)
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.writelines([b"body", bytearray(b"-1")])
    assert rec.writes == [] and t.get_write_buffer_size() == 7 + 25
    await asyncio.sleep(0)
    assert rec.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody-1"]
    t.write(b"next turn")
    await asyncio.sleep(0)
    assert rec.writes[1:] == [b"next turn"]
    t.flush()  # nothing pending: no empty write
    assert len(rec.writes) == 2


async def test_close_flushes_abort_drops_and_the_rest_delegates() -> None:
    rec = Recorder()
    t = wrap(rec)
    t.write(b"last words")
    t.close()
    assert rec.writes == [b"last words"] and rec.closed
    await asyncio.sleep(0)
    assert rec.writes == [b"last words"]  # the scheduled flush finds nothing

    rec2 = Recorder()
    t2 = wrap(rec2)
    t2.write(b"never sent")
    t2.abort()
    await asyncio.sleep(0)
    assert rec2.writes == [] and rec2.aborted
    assert t2.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_nothing_is_written_to_a_closing_transport() -> None:
    rec = Recorder()
    t = wrap(rec)
    t.write(b"too late")
    rec.closed = True
    await asyncio.sleep(0)
    assert rec.writes == []


def test_a_whole_answer_arrives_from_the_real_server(stack: Stack) -> None:
    """Raw HTTP/1.1 through Tollway's protocol: head and body, keep-alive, then close."""
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for _ in range(2):  # two requests on one connection
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            while b'{"status":"ok"}' not in data:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b'{"status":"ok"}')
