"""Where an upstream's base URL points and how to get there: the parsed origin, its TLS
context and proxy (resolved once, `upstreams/egress.py`), the client's connection errors, and
the CONNECT tunnel through an HTTP proxy (TLS with the upstream starts inside it)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar
from urllib.parse import urlsplit

from tollway.upstreams.egress import Egress, EgressDefaults, Proxy, context_for, proxy_for

P = TypeVar("P", bound=asyncio.Protocol)


class UpstreamError(Exception):
    """The connection failed or broke before the response was complete."""

    reason = "connection failed"  # what the pool records for the admin's view
    public = "Could not reach any upstream."  # what a client may be told


class TLSVerifyError(UpstreamError):
    """The upstream's certificate was not trusted, or names another host."""

    reason = "TLS certificate verification failed"
    public = (
        "Could not reach any upstream: TLS certificate verification failed "
        "(an upstream's certificate is not trusted; see ca_bundle)."
    )


class ProxyError(UpstreamError):
    """The egress proxy could not be reached or refused the tunnel."""

    reason = "egress proxy failed"
    public = "Could not reach any upstream through the egress proxy."


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one base URL points, parsed once."""

    host: str
    port: int
    tls: bool
    host_header: bytes
    prefix: bytes  # the base URL's path, e.g. b"/v1" (through a proxy: the absolute URL's start)
    ssl: ssl.SSLContext | None = None  # https: the context to verify with
    proxy: Proxy | None = None  # connect through this HTTP proxy (CONNECT when tls)
    extra: bytes = b""  # header lines for a proxy (plain http through a proxy: its credentials)

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        default = port == (443 if tls else 80)
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host_header = name if default else f"{name}:{port}"
        return cls(
            parts.hostname, port, tls, host_header.encode("idna"), parts.path.encode("latin-1")
        )


def resolve(
    base_url: str,
    egress: Egress | None,
    defaults: EgressDefaults,
    context: ssl.SSLContext | None = None,
) -> Origin:
    """The origin with its TLS context (`context`, else the upstream's or global CA bundle)
    and proxy. Plain http through a proxy sends absolute-form requests (`prefix` holds the
    URL's start) with the proxy's credentials; https goes through a CONNECT tunnel."""
    origin = Origin.parse(base_url)
    if origin.tls and context is None:
        context = context_for(egress, defaults.ca_bundle)
    proxy = proxy_for(base_url, egress, defaults.trust_env)
    if proxy is None or origin.tls:
        return replace(origin, ssl=context if origin.tls else None, proxy=proxy)
    absolute = b"http://" + origin.host_header + origin.prefix
    return replace(origin, prefix=absolute, proxy=proxy, extra=proxy.auth_line)


class _TunnelHead(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT (its head only; TLS starts right after)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head: asyncio.Future[bytes] = loop.create_future()
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.head.done():
            self.head.set_result(self.buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ProxyError("the proxy closed the connection during CONNECT"))


async def open_tunnel(
    loop: asyncio.AbstractEventLoop,
    proxy: Proxy,
    host: str,
    port: int,
    context: ssl.SSLContext,
    factory: Callable[[], P],
) -> P:
    """CONNECT host:port through the proxy, then TLS with the upstream inside the tunnel."""
    transport, reader = await loop.create_connection(
        lambda: _TunnelHead(loop), proxy.host, proxy.port
    )
    try:
        name = f"[{host}]" if ":" in host else host
        authority = f"{name}:{port}".encode("idna")
        transport.write(
            b"CONNECT %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (authority, authority, proxy.auth_line)
        )
        head = await reader.head
        status_line = head.split(b"\r\n", 1)[0]
        parts = status_line.split(None, 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 200:
            raise ProxyError(f"proxy {proxy.where} answered HTTP {status} to CONNECT")
        if not head.endswith(b"\r\n\r\n"):
            raise ProxyError(f"proxy {proxy.where} sent bytes after its CONNECT answer")
        conn = factory()
        tls = await loop.start_tls(transport, reader, context, server_hostname=host)
    except BaseException:
        transport.close()
        raise
    if tls is None:  # the loop could not start TLS on this transport
        transport.close()
        raise ProxyError("TLS could not start inside the proxy tunnel")
    tls.set_protocol(conn)
    conn.connection_made(tls)
    return conn
