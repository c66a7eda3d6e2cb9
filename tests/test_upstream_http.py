"""The relay's own HTTP/1.1 client against real sockets: small servers on 127.0.0.1 that answer
byte for byte what each case needs (keep-alive, a closed idle connection, gzip, a body ended by
the connection's close, interim answers, broken answers, slow answers, TLS)."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tollway.gateway import upstream_http
from tollway.gateway.upstream_http import Origin, UpstreamClient, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head and its body (Content-Length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Server:
    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1"


def keep_alive_echo(server_ref: list[Server]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            server_ref[0].requests.append((head, body))
            writer.write(ok(b"echo:" + body, b"content-type: application/json\r\n"))
            await writer.drain()

    return handle


async def test_keep_alive_reuses_one_connection_and_sends_the_exact_request() -> None:
    ref: list[Server] = []
    async with Server(keep_alive_echo(ref)) as srv:
        ref.append(srv)
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        for n in range(3):
            resp = await client.request(
                srv.url, b"POST", b"/chat/completions?x=1", b"x-a: 1\r\n", b'{"n":%d}' % n
            )
            assert resp.status == 200
            assert resp.header(b"content-type") == b"application/json"
            assert await resp.read() == b'echo:{"n":%d}' % n
            assert await resp.read() == b'echo:{"n":%d}' % n  # kept for a second read
            resp.release()
        await client.close()
    assert srv.connections == 1
    head, body = srv.requests[0]
    assert head.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in head and b"\r\nx-a: 1\r\n" in head
    assert b"content-length: 7\r\n" in head and body == b'{"n":0}'


async def test_get_without_body_sends_no_content_length() -> None:
    ref: list[Server] = []
    async with Server(keep_alive_echo(ref)) as srv:
        ref.append(srv)
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"GET", b"/models", b"", b"")
        assert await resp.read() == b"echo:"
        resp.release()
        await client.close()
    assert b"content-length" not in srv.requests[0][0]


async def test_an_idle_connection_closed_by_the_upstream_is_replaced_not_failed() -> None:
    async def answer_once_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(ok(b"one"))  # says keep-alive, then closes anyway
        await writer.drain()

    async with Server(answer_once_then_close) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        for _ in range(3):
            resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
            assert await resp.read() == b"one"
            resp.release()
            await asyncio.sleep(0.05)  # the close reaches us while idle, or on the next send
        await client.close()
    assert srv.connections == 3


async def test_a_kept_connection_dropped_as_the_request_arrives_is_retried_once() -> None:
    async def drop_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await writer.drain()
        await read_request(reader)  # the next request on this connection: dropped unanswered

    async with Server(drop_second) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        for _ in range(2):
            resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
            assert await resp.read() == b"first"
            resp.release()
        await client.close()
    assert srv.connections == 2


async def test_a_fresh_connection_dropped_without_answer_is_an_error() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with Server(drop) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        with pytest.raises(UpstreamError, match="closed mid-response"):
            await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        await client.close()
    assert srv.connections == 1


async def test_an_answer_nobody_asked_for_is_ignored_and_the_connection_dropped() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(ok(b"real") + ok(b"extra", b"x-extra: 1\r\n"))  # one write, two answers
            await writer.drain()

    async with Server(chatty) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        for _ in range(2):
            resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
            assert await resp.read() == b"real" and resp.header(b"x-extra") is None
            resp.release()
        await client.close()
    assert srv.connections == 2  # the first connection was not reused


async def test_gzip_body_is_decoded_and_flagged() -> None:
    payload = b'{"usage":{"total_tokens":3}}' * 100

    async def gz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(gzip.compress(payload), b"content-encoding: gzip\r\n"))
        await writer.drain()

    async with Server(gz) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        assert resp.decoded and resp.content_encoding == b"gzip"
        assert await resp.read() == payload
        resp.release()
        await client.close()


async def test_unknown_encoding_passes_untouched() -> None:
    async def br(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"\x8b\x00brotli", b"content-encoding: br\r\n"))
        await writer.drain()

    async with Server(br) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        assert not resp.decoded and resp.content_encoding == b"br"
        assert await resp.read() == b"\x8b\x00brotli"
        resp.release()
        await client.close()


async def test_body_ended_by_connection_close_and_interim_answer() -> None:
    async def legacy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx-final: yes\r\nconnection: close\r\n\r\npart1,")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"part2")
        await writer.drain()

    async with Server(legacy) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        assert resp.status == 200 and resp.header(b"x-final") == b"yes"
        got = [c async for c in resp.chunks()]
        assert b"".join(got) == b"part1,part2"
        resp.release()
        await client.close()


async def test_head_answer_has_no_body() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with Server(head) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"HEAD", b"/x", b"", b"")
        assert resp.status == 200 and await resp.read() == b""
        resp.release()
        await client.close()


async def test_a_cut_off_body_is_an_error_not_a_short_answer() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async with Server(cut) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        with pytest.raises(UpstreamError, match="mid-response"):
            await resp.read()
        resp.release()
        await client.close()


async def test_garbage_is_an_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with Server(garbage) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        with pytest.raises(UpstreamError, match="invalid HTTP response"):
            await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        await client.close()


async def test_read_timeout_before_and_during_the_body() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        if body == b"during":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await writer.drain()
        await asyncio.sleep(2)

    async with Server(stall) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await client.request(srv.url, b"POST", b"/x", b"", b"before")
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"during")
        chunks = resp.chunks()
        assert await chunks.__anext__() == b"abc"
        with pytest.raises(TimeoutError):
            await chunks.__anext__()
        resp.release()
        await client.close()


async def test_slow_but_steady_stream_does_not_time_out() -> None:
    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, never 0.25 s quiet
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with Server(steady) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=0.25)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        assert b"".join([c async for c in resp.chunks()]) == b"x" * 6
        resp.release()
        await client.close()


async def test_back_pressure_pauses_and_resumes_a_big_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream_http, "PAUSE_AT", 64 * 1024)
    block = bytes(range(256)) * 256  # 64 KiB

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(block) * 64))
        for _ in range(64):
            writer.write(block)
            await writer.drain()

    async with Server(big) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        received = bytearray()
        paused_seen = False
        async for chunk in resp.chunks():
            received += chunk
            await asyncio.sleep(0.005)  # a slow client
            conn = resp._conn
            paused_seen = paused_seen or (conn is not None and conn.paused)
        assert bytes(received) == block * 64
        assert paused_seen
        resp.release()
        await client.close()


async def test_close_abandons_the_answer_and_its_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with Server(endless) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"{}")
        chunks = resp.chunks()
        await chunks.__anext__()
        resp.close()
        with pytest.raises(UpstreamError, match="closed"):
            while True:
                await chunks.__anext__()
        await client.close()


async def test_refused_and_bad_urls_are_upstream_errors() -> None:
    client = UpstreamClient(connect_timeout=2, read_timeout=5)
    with pytest.raises(UpstreamError, match="cannot connect"):
        await client.request("http://127.0.0.1:9/v1", b"POST", b"/x", b"", b"{}")
    with pytest.raises(UpstreamError, match="not an http"):
        await client.request("ftp://example/v1", b"POST", b"/x", b"", b"{}")
    await client.close()


def test_origin_parsing() -> None:
    o = Origin.parse("https://api.example.com/v1")
    assert (o.host, o.port, o.tls, o.host_header, o.prefix) == (
        "api.example.com",
        443,
        True,
        b"api.example.com",
        b"/v1",
    )
    o = Origin.parse("http://[::1]:8080")
    assert (o.host, o.port, o.host_header, o.prefix) == ("::1", 8080, b"[::1]:8080", b"")


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_tls_upstream(tmp_path: Path) -> None:
    server_ctx, client_ctx = _self_signed(tmp_path)
    ref: list[Server] = []
    async with Server(keep_alive_echo(ref), tls=server_ctx) as srv:
        ref.append(srv)
        client = UpstreamClient(connect_timeout=2, read_timeout=5, ssl_context=client_ctx)
        resp = await client.request(srv.url, b"POST", b"/x", b"", b"tls")
        assert await resp.read() == b"echo:tls"
        resp.release()
        # Without trusting the certificate the connection is refused, as an UpstreamError.
        untrusting = UpstreamClient(connect_timeout=2, read_timeout=5)
        with pytest.raises(UpstreamError, match="certificate verification failed"):
            await untrusting.request(srv.url, b"POST", b"/x", b"", b"tls")
        await client.close()
        await untrusting.close()
