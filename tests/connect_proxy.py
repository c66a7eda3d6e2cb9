"""A small real HTTP proxy on 127.0.0.1 in its own thread: CONNECT tunnels (counted) and
absolute-form plain HTTP requests, optionally demanding Basic proxy credentials. After the
first request of a connection it only pipes bytes, as a tunnel does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from urllib.parse import urlsplit


class ConnectProxy:
    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.expected = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.expected = f"Basic {token}".encode()
        self.connections = 0
        self.tunnels: list[bytes] = []  # CONNECT targets, one per tunnel opened
        self.plain: list[bytes] = []  # request lines of plain (absolute-form) requests
        self.auth_seen: list[bytes | None] = []
        self.refused = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ConnectProxy:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()
            loop.close()

        self._thread = threading.Thread(target=run, name="connect-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            auth = None
            kept = [lines[0]]
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"proxy-authorization":
                    auth = value.strip()
                else:
                    kept.append(line)  # a real proxy does not pass its credentials on
            self.auth_seen.append(auth)
            if self.expected is not None and auth != self.expected:
                self.refused += 1
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'proxy-authenticate: Basic realm="test"\r\ncontent-length: 0\r\n\r\n'
                )
                await writer.drain()
                return
            if method == b"CONNECT":
                host, _, port = target.rpartition(b":")
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                self.tunnels.append(target)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                parts = urlsplit(target.decode())
                assert parts.scheme == "http" and parts.hostname, target
                up_reader, up_writer = await asyncio.open_connection(
                    parts.hostname, parts.port or 80
                )
                self.plain.append(lines[0])
                up_writer.write(b"\r\n".join(kept))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()
