"""Finding 5: connections are timed out and capped. A connection must send a complete request
head within the header timeout (trickling bytes does not extend it), an idle kept-alive one is
closed, and open connections stay under the open-file limit: idle ones are closed to make
room, and when every connection is busy a new one gets 503 at once."""

from __future__ import annotations

import asyncio
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from tollway.gateway.edge import derived_max_connections
from tollway.store.db import migrate_sync

from .fake_upstream import FakeUpstream
from .fixtures_gateway import Stack, make_key, write_config
from .servers import GatewayProcess, wait_ready

FILE_LIMIT = 256
IDLE_SOCKETS = 300


def closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it stayed open."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got
    except TimeoutError:
        return None


class LimitedGateway(GatewayProcess):
    """`tollway serve` under a lowered open-file limit."""

    def start(self) -> LimitedGateway:
        out = self.log.open("wb")

        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"],
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_limit,
        )
        try:
            wait_ready(self.url, 30)
        except RuntimeError:
            self.stop()
            raise RuntimeError(self.log.read_text()) from None
        return self


def test_idle_connections_under_a_low_file_limit_never_block_real_requests(
    tmp_path: Path,
) -> None:
    upstream = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"
    config = write_config(
        tmp_path / "tollway.yaml",
        [{"name": "a", "base_url": upstream.base_url, "api_key": upstream.api_key,
          "models": ["gpt-test"]}],
    )  # fmt: skip
    migrate_sync(db_url)
    secret = make_key(db_url)
    env = {
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_HEADER_TIMEOUT": "3",
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    gateway = LimitedGateway(env, tmp_path)
    idle: list[socket.socket] = []
    try:
        gateway.start()
        assert gateway.proc is not None
        limits = Path(f"/proc/{gateway.proc.pid}/limits").read_text()
        assert f"Max open files            {FILE_LIMIT}" in limits
        for _ in range(IDLE_SOCKETS):  # connect and say nothing
            idle.append(socket.create_connection(("127.0.0.1", gateway.port)))
        client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
        for _ in range(10):
            reply = client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
        client.close()
        # Past the header timeout the server has closed every idle socket, silently.
        fds = len(list(Path(f"/proc/{gateway.proc.pid}/fd").iterdir()))
        left = [closed_by_server(s, 15.0) for s in idle]
        assert all(got == b"" for got in left), [g for g in left if g != b""][:3]
        print(
            f"\nfile limit {FILE_LIMIT}, {IDLE_SOCKETS} idle sockets: 10/10 requests served; "
            f"server fds while they were open: {fds}; all idle sockets closed"
        )
        assert fds < FILE_LIMIT
    finally:
        for s in idle:
            s.close()
        gateway.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("conns"),
        header_timeout=1.0,
        keep_alive_timeout=0.5,
        max_connections=4,
    )
    yield s
    s.stop()


def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_408(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.gateway.settings.port)) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400
        for byte in head:  # keeps sending, never finishes the head, until the server answers
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], 0.05)[0]:
                break
        got = closed_by_server(sock, 15.0)
    assert got is not None and got.startswith(b"HTTP/1.1 408 ")


def test_idle_keep_alive_connection_is_closed(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.gateway.settings.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert closed_by_server(sock, 15.0) == b""  # after keep_alive_timeout, silently


def test_past_the_cap_idle_ones_make_room_and_busy_ones_refuse_with_503(stack: Stack) -> None:
    stack.reset()
    port = stack.gateway.settings.port
    # Four idle connections fill the cap; a real request still gets through.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        reply = stack.client().chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
    finally:
        for s in idle:
            s.close()
    # Four requests in flight (the upstream holds them): the fifth connection is refused.
    release = threading.Event()

    async def hold(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.to_thread(release.wait)
        return web.json_response(stack.a._completion({"model": "gpt-test"}, request.path))

    stack.a.behaviour.respond = hold
    results: list[int] = []

    def one() -> None:
        r = httpx.post(
            stack.url + "/v1/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {stack.key}"},
            timeout=30,
        )
        results.append(r.status_code)

    busy = [threading.Thread(target=one) for _ in range(4)]
    for t in busy:
        t.start()
    try:
        deadline = time.monotonic() + 15
        while len(stack.a.seen) < 4:
            assert time.monotonic() < deadline, "the four requests never reached the upstream"
            time.sleep(0.02)
        refused = httpx.get(stack.url + "/healthz", timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_connections"
    finally:
        release.set()
        for t in busy:
            t.join(30)
    assert results == [200, 200, 200, 200]
    assert httpx.get(stack.url + "/healthz", timeout=10).status_code == 200


def test_derived_cap_leaves_room_under_the_file_limit() -> None:
    """Half of what a 256 file limit leaves after the reserve of 64: 96 connections (each may
    hold one upstream connection while in a request)."""
    done = subprocess.run(
        [sys.executable, "-c", "from tollway.gateway.edge import derived_max_connections as d;"
         "print(d())"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT)),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(done.stdout) == (FILE_LIMIT - 64) // 2 == 96
    assert derived_max_connections() >= 8
