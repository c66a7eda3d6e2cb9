"""A lean HTTP/1.1 client for the relay: pooled keep-alive connections on asyncio protocols,
responses parsed by httptools (llhttp, the parser uvicorn uses).

Why not aiohttp's client: building its request and response objects was the largest single
cost on the proxy path (about a third of the event loop's time, py-spy; bench/README.md). This
client writes one pre-joined request head per request and hands the response's raw header
list and body bytes straight to the endpoint. It does only what the relay needs: one request
per connection at a time, `Content-Length` request bodies, no redirects, no cookies. TLS and
outbound proxies (CONNECT for https, absolute-form requests for http) are resolved once per
origin (`upstreams/egress.py`), so a request costs the same with or without them.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator

import httptools

from tollway.upstreams.egress import Egress, EgressDefaults

from .upstream_route import (
    Origin,
    ProxyError,
    TLSVerifyError,
    UpstreamError,
    open_tunnel,
    resolve,
)

__all__ = ["Origin", "ProxyError", "TLSVerifyError", "UpstreamClient", "UpstreamError"]

PAUSE_AT = 1 << 20  # buffered response bytes before we stop reading the upstream socket
MAX_IDLE_PER_ORIGIN = 256
METHODS_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})


class _Stale(UpstreamError):
    """A reused keep-alive connection was closed by the upstream before any answer came."""


class UpstreamResponse:
    """One upstream answer: status and headers at once, the body as it arrives."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_decoder",
        "_done",
        "_error",
        "_head",
        "_size",
        "_streaming",
        "_waiter",
        "content_encoding",
        "decoded",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._streaming = False  # chunks() is consuming: apply back-pressure
        self._done = False
        self._error: BaseException | None = None
        self._decoder: zlib._Decompress | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # names lower-cased
        self.content_encoding: bytes | None = None  # as the upstream sent it
        self.decoded = False  # gzip/deflate undone here; the body is identity

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` lower-case)."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    async def read(self) -> bytes:
        """The whole body (kept: a second read returns it again)."""
        while not self._done:
            await self._wait()
        self._raise_if_failed()
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        body = b"".join(chunks)
        chunks[:] = [body] if body else []
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the upstream's pieces (several joined when they queue)."""
        self._streaming = True
        while True:
            if self._chunks:
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._size = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                yield data
            elif self._done:
                self._raise_if_failed()
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Done with this answer: the connection goes back to the pool when it can be reused."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(reusable=self._done and self._error is None)

    def close(self) -> None:
        """Abandon the answer and its connection (cancels the upstream's work)."""
        self._fail(UpstreamError("response closed"))
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(reusable=False)

    # -- fed by the connection --------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait(self) -> None:
        waiter = self._waiter = self._head.get_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        self._raise_if_failed()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _headers_done(self, status: int) -> None:
        self.status = status
        encoding = self.header(b"content-encoding")
        if encoding is not None:
            self.content_encoding = encoding
            coding = encoding.strip().lower()
            if coding in (b"gzip", b"x-gzip", b"deflate"):
                self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
                self.decoded = True
        if not self._head.done():
            self._head.set_result(None)

    def _body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(UpstreamError(f"bad compressed body: {exc}"))
                return
        if data:
            self._chunks.append(data)
            self._size += len(data)
        self._wake()

    def _complete(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._done:
            return
        self._error = exc
        self._done = True
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: the request() caller re-raises it
        self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an origin; at most one request at a time."""

    def __init__(
        self, client: UpstreamClient, key: object, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.client = client
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.paused = False
        self.received = False  # any byte of the current answer
        self.keep_alive = True
        self.head_only = False
        self.reused = False  # the current request went out on a kept-alive connection
        self.idle_since = 0.0
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._done:  # bytes nobody asked for: not reusable
            self.keep_alive = False
            if response is None:
                self.close()
            return
        self.received = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(UpstreamError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        response = self.response
        if response is None or response._done:
            return
        if response.status and not self._framed():
            response._complete()  # a body delimited by the connection's end
        elif not self.received and self.reused:
            response._fail(_Stale("keep-alive connection closed by the upstream"))
        else:
            response._fail(UpstreamError("upstream connection closed mid-response"))

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is not None and not response._done:
            response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None or response._done:  # a second answer nobody asked for
            self.keep_alive = False
            return
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue...); the real one follows
            response.headers.clear()
            return
        self.keep_alive = self.parser.should_keep_alive()
        response._headers_done(status)
        if self.head_only:  # no body follows; the parser cannot be told, so do not reuse
            self.keep_alive = False
            self._message_complete()

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None and not response._done:
            response._body(body)
            if (
                response._streaming
                and response._size > PAUSE_AT
                and not self.paused
                and self.transport is not None
            ):
                self.paused = True
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.response is not None and self.response.status:  # not an interim answer's end
            self._message_complete()

    # -- the client's side ------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, head_only: bool) -> UpstreamResponse:
        assert self.transport is not None
        response = self.response = UpstreamResponse(self)
        self.received = False
        self.head_only = head_only
        self.last_read = self.loop.time()
        if body and len(body) > 65536:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head + body)
        # Until the first byte the first-byte timeout applies, then the idle one.
        self.timer = self.loop.call_later(self.client.first_byte_timeout, self._check_read_timeout)
        return response

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def finish(self, reusable: bool) -> None:
        """The response is released: back to the idle pool, or closed."""
        self._cancel_timer()
        self.response = None
        if self.paused:
            self.resume()
        if reusable and self.keep_alive and not self.closed:
            self.client._put_idle(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    # -- internals --------------------------------------------------------------------------

    def _message_complete(self) -> None:
        self._cancel_timer()
        if self.response is not None and not self.response._done:
            self.response._complete()

    def _framed(self) -> bool:
        """Whether the answer says where it ends (else the connection's end does)."""
        response = self.response
        if response is None:
            return True
        if self.head_only or response.status in (204, 304) or response.status < 200:
            return True
        return (
            response.header(b"content-length") is not None
            or response.header(b"transfer-encoding") is not None
        )

    def _check_read_timeout(self) -> None:
        """One timer per request, re-armed lazily: reading is refreshed by every data_received
        instead of arming a timer per read. Before any byte of the answer the first-byte
        timeout applies (a hung upstream fails over sooner), after it the idle time between
        two reads."""
        self.timer = None
        response = self.response
        if response is None or response._done:
            return
        idle = self.loop.time() - self.last_read
        received = self.received
        timeout = self.client.read_timeout if received else self.client.first_byte_timeout
        if idle >= timeout:
            self._abort(
                TimeoutError(
                    "upstream idle between reads" if received else "upstream sent no first byte"
                )
            )
        else:
            self.timer = self.loop.call_later(timeout - idle, self._check_read_timeout)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _abort(self, exc: BaseException) -> None:
        if self.response is not None:
            self.response._fail(exc)
        self.close()


class UpstreamClient:
    """Keep-alive connections per origin; `request` sends one request and returns once the
    answer's status line and headers are in."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        keepalive: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        first_byte_timeout: float | None = None,
        egress: EgressDefaults | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout  # idle time between two reads, once bytes came
        # From the request's write to the answer's first byte (the read timeout when unset).
        self.first_byte_timeout = read_timeout if first_byte_timeout is None else first_byte_timeout
        self.keepalive = keepalive
        self._ssl = ssl_context
        self.egress = egress or EgressDefaults()
        # Origins and idle connections are keyed by the base URL, or by (base URL, Egress)
        # for an upstream with network settings of its own.
        self._origins: dict[object, Origin] = {}
        self._idle: dict[object, list[_Connection]] = {}
        self._all: set[_Connection] = set()

    def origin(self, base_url: str, egress: Egress | None = None) -> Origin:
        key = base_url if egress is None else (base_url, egress)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = self._resolve(base_url, egress)
        return origin

    def _resolve(self, base_url: str, egress: Egress | None) -> Origin:
        own = egress is not None or self._ssl is None  # a test's context, unless configured
        return resolve(base_url, egress, self.egress, None if own else self._ssl)

    async def request(
        self,
        base_url: str,
        method: bytes,
        path: bytes,
        headers: bytes,
        body: bytes,
        egress: Egress | None = None,
    ) -> UpstreamResponse:
        """`path` is appended to the base URL's path (it carries the query string); `headers`
        is a block of `name: value\\r\\n` lines (no Host, no Content-Length); `egress` is the
        upstream's own TLS/proxy settings (None: the client's defaults)."""
        key = base_url if egress is None else (base_url, egress)
        origin = self._origins.get(key)
        if origin is None:
            try:
                origin = self._origins[key] = self._resolve(base_url, egress)
            except (ValueError, OSError) as exc:  # a bad URL, an unreadable CA bundle
                raise UpstreamError(str(exc)) from exc
        head = b"".join(
            (
                method,
                b" ",
                origin.prefix,
                path,
                b" HTTP/1.1\r\nhost: ",
                origin.host_header,
                b"\r\n",
                origin.extra,
                headers,
                b"content-length: %d\r\n\r\n" % len(body)
                if body or method in METHODS_WITH_BODY
                else b"\r\n",
            )
        )
        head_only = method == b"HEAD"
        while True:
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, origin)
            conn.reused = reused
            response = conn.send(head, body, head_only)
            try:
                await response._head
            except _Stale:
                conn.close()
                continue  # the upstream closed it while idle; a fresh connection is safe
            except asyncio.CancelledError:
                response.close()
                raise
            return response

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    # -- the pool ---------------------------------------------------------------------------

    def _take_idle(self, key: object) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = idle[-1].loop.time()  # (asyncio.get_running_loop() costs a getpid() call)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
            self._all.discard(conn)
        return None

    def _put_idle(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            self._all.discard(conn)
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)

    async def _connect(self, key: object, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            conn = await asyncio.wait_for(self._open(key, origin, loop), self.connect_timeout)
        except ssl.SSLCertVerificationError as exc:  # untrusted, expired, another host's name
            raise TLSVerifyError(
                f"TLS certificate verification failed for {origin.host}:{origin.port}: "
                f"{exc.verify_message or exc}"
            ) from exc
        except UpstreamError:
            raise
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            if origin.proxy is not None:
                raise ProxyError(
                    f"cannot connect to {origin.host}:{origin.port} through proxy "
                    f"{origin.proxy.where}: {exc}"
                ) from exc
            raise UpstreamError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        self._all.add(conn)
        # Forget closed connections now and then so the set does not grow with churn.
        if len(self._all) > 4 * MAX_IDLE_PER_ORIGIN:
            self._all = {c for c in self._all if not c.closed}
        return conn

    async def _open(
        self, key: object, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        context = origin.ssl
        proxy = origin.proxy
        if proxy is None:
            _, conn = await loop.create_connection(
                lambda: _Connection(self, key, loop),
                origin.host,
                origin.port,
                ssl=context,
                server_hostname=origin.host if context is not None else None,
            )
            return conn
        if context is None:  # plain http through the proxy: absolute-form requests
            _, conn = await loop.create_connection(
                lambda: _Connection(self, key, loop), proxy.host, proxy.port
            )
            return conn
        return await open_tunnel(
            loop, proxy, origin.host, origin.port, context, lambda: _Connection(self, key, loop)
        )
