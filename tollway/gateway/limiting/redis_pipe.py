"""One pipelined Redis connection for the limits' Lua scripts (the two calls every limited
request makes).

Why not redis-py's client for these: its per-command machinery (connection pool checkout,
health checks, an `asyncio.timeout` per call, the pure-Python reply parser) took about 40 % of
the event loop under load with Redis limits on (py-spy; bench/README.md). Here a command is
written as soon as it is issued, replies come back in order on the one connection (Redis
guarantees that), and hiredis (Redis's own C parser) decodes them: requests arriving together
share one socket write/read without waiting for each other. redis-py still does everything
else (pipelines for lease renewal, snapshots); its exception classes are used here too, so
callers handle one family of errors.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def encode(*parts: bytes) -> bytes:
    """A command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


Waiting = collections.deque[tuple[asyncio.Future[Any], float]]


class _Protocol(asyncio.Protocol):
    """One connection; `waiting` holds (reply future, time sent) in the order sent."""

    def __init__(self, pipe: ScriptPipe) -> None:
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        self.waiting: Waiting = collections.deque()
        self.out: list[bytes] = []  # commands issued in this loop iteration, sent as one write
        self.failed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def send(self, data: bytes) -> asyncio.Future[Any]:
        if self.failed is not None:
            raise self.failed
        loop = self.loop
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((future, loop.time()))
        if not self.out:
            loop.call_soon(self.flush)
        self.out.append(data)
        return future

    def flush(self) -> None:
        out, self.out = self.out, []
        if self.failed is None and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            future, _ = waiting.popleft()
            if not future.done():
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis connection lost: {exc!r}"))

    def fail(self, exc: Exception) -> None:
        """A connection that failed or fell out of step is never used again."""
        if self.failed is None:
            self.failed = exc
        if self.pipe._proto is self:
            self.pipe._proto = None
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class ScriptPipe:
    """`await pipe.run(sha, script, keys, args)`: EVALSHA, falling back to EVAL once when the
    server does not know the script yet (after a restart or SCRIPT FLUSH)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 0.5,
        path: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self.path = path
        self.tls = tls
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Commands every new connection sends before anyone else's (the limiter re-registers
        # the slots it holds: after a Redis restart they must be back before a new admit).
        self.on_connect: Callable[[], list[bytes]] | None = None

    @classmethod
    def like(cls, client: aioredis.Redis) -> ScriptPipe:
        """A pipe to the server (database, credentials, timeout) a redis-py client talks to."""
        pool = client.connection_pool
        kw = pool.connection_kwargs
        tls: ssl.SSLContext | None = None
        if issubclass(pool.connection_class, SSLConnection):
            tls = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
            if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        unix = issubclass(pool.connection_class, UnixDomainSocketConnection)
        return cls(
            host=kw.get("host", "127.0.0.1"),
            port=int(kw.get("port", 6379)),
            db=int(kw.get("db", 0)),
            username=kw.get("username"),
            password=kw.get("password"),
            timeout=float(kw.get("socket_timeout") or 0.5),
            path=kw.get("path") if unix else None,
            tls=tls,
        )

    async def run(self, sha: str, script: bytes | str, keys: list[str], args: list[str]) -> Any:
        head = [str(len(keys)).encode(), *(k.encode() for k in keys), *(a.encode() for a in args)]
        try:
            return await self._command(encode(b"EVALSHA", sha.encode(), *head))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        body = script.encode() if isinstance(script, str) else script
        return await self._command(encode(b"EVAL", body, *head))  # also caches it

    async def close(self) -> None:
        if self._proto is not None:
            self._proto.fail(RedisConnectionError("closed"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals -----------------------------------------------------------------------------

    async def _command(self, data: bytes) -> Any:
        proto = self._proto
        if proto is None:
            proto = await self._connect()
        loop = proto.loop  # (asyncio.get_running_loop() costs a getpid() call)
        future = proto.send(data)
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._check_timeout)
        return await future

    async def _connect(self) -> _Protocol:
        """One connection attempt at a time; everyone who needs it waits for the same one."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_Protocol]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._proto = task.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            if self.path is not None:
                _, proto = await asyncio.wait_for(
                    loop.create_unix_connection(lambda: _Protocol(self), self.path), self.timeout
                )
            else:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Protocol(self),
                        self.host,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.host if self.tls else None,
                    ),
                    self.timeout,
                )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
        # The handshake goes first on the new connection, before anyone else may use it.
        setup: list[bytes] = []
        if self.password is not None:
            auth = [b"AUTH"] + ([self.username.encode()] if self.username else [])
            setup.append(encode(*auth, self.password.encode()))
        if self.db:
            setup.append(encode(b"SELECT", str(self.db).encode()))
        if self.on_connect is not None:
            setup.extend(self.on_connect())
        try:
            replies = [proto.send(command) for command in setup]
            if replies:
                await asyncio.wait_for(asyncio.gather(*replies), self.timeout)
        except (RedisConnectionError, ResponseError, TimeoutError) as exc:
            proto.fail(RedisConnectionError(f"Redis refused the connection setup: {exc}"))
            raise RedisConnectionError(f"Redis refused the connection setup: {exc}") from exc
        return proto

    def _check_timeout(self) -> None:
        """One timer for the whole pipe, re-armed lazily: when the oldest reply is late, the
        connection is out of step for good, so it fails with everything waiting on it."""
        self._timer = None
        proto = self._proto
        if proto is None or not proto.waiting:
            return
        loop = proto.loop
        age = loop.time() - proto.waiting[0][1]
        if age >= self.timeout:
            proto.fail(RedisTimeoutError("Redis did not answer in time"))
            return
        self._timer = loop.call_later(self.timeout - age, self._check_timeout)
