"""Reference "bare pass-through" hop: the least a Python proxy can do per request.

A raw ASGI app on uvicorn (uvloop + httptools, as `tollway serve` runs) that checks one static
bearer key and forwards the request upstream, passing the response back unchanged. No routing,
no limits, no accounting: the gap between this and Tollway is Tollway's own cost.

`--client tollway` (default) forwards through Tollway's own upstream client
(`tollway.gateway.upstream_http`) and serves with Tollway's uvicorn protocol
(`tollway.gateway.http_server`), so the reference runs on the same server *and* client stack
as Tollway; `--client aiohttp` through one pooled aiohttp ClientSession on uvicorn's plain
httptools protocol, the stack Tollway used before (kept as a second reference). An https://
upstream is verified against the system's CA store, or against `--ca-bundle` (as Tollway's
`TOLLWAY_UPSTREAM_CA_BUNDLE`).

    python bench/bare_proxy.py --port 9001 --upstream http://127.0.0.1:9000 \
        --key sk-client --upstream-key sk-upstream [--client aiohttp] [--workers 2] \
        [--ca-bundle ca.pem]
"""

from __future__ import annotations

import argparse
import os
import ssl
from typing import Any

import aiohttp
import uvicorn

from tollway.gateway.http_server import TollwayHttpProtocol
from tollway.gateway.upstream_http import UpstreamClient, UpstreamError
from tollway.upstreams.egress import EgressDefaults

# Never forwarded in either direction (RFC 9110 hop-by-hop), plus the ones we set ourselves.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
_REQUEST_DROP = _HOP_BY_HOP | {b"host", b"authorization", b"content-length"}
_FAILED = b'{"error":{"message":"upstream failed"}}'


class BareProxy:
    def __init__(
        self, upstream: str, key: str, upstream_key: str, client: str, ca_bundle: str | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.expected_auth = f"Bearer {key}".encode()
        self.upstream_auth = f"Bearer {upstream_key}"
        self.client_kind = client
        self.ca_bundle = ca_bundle
        self.session: aiohttp.ClientSession | None = None
        self.lean: UpstreamClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.client_kind == "aiohttp":
                    context = ssl.create_default_context(cafile=self.ca_bundle)
                    connector = aiohttp.TCPConnector(
                        limit=0, ttl_dns_cache=None, ssl=context if self.ca_bundle else True
                    )
                    self.session = aiohttp.ClientSession(
                        connector=connector,
                        auto_decompress=False,
                        timeout=aiohttp.ClientTimeout(),
                    )
                else:
                    self.lean = UpstreamClient(
                        connect_timeout=10.0,
                        read_timeout=600.0,
                        egress=EgressDefaults(ca_bundle=self.ca_bundle),
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                if self.lean is not None:
                    await self.lean.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if auth != self.expected_auth:
            await _respond(send, 401, b'{"error":{"message":"invalid key"}}')
            return

        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if self.lean is not None:
            await self._via_lean(scope, body, send)
        else:
            await self._via_aiohttp(scope, body, send)

    async def _via_lean(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        assert self.lean is not None
        lines = [k + b": " + v + b"\r\n" for k, v in scope["headers"] if k not in _REQUEST_DROP]
        lines.append(b"authorization: " + self.upstream_auth.encode() + b"\r\n")
        path = scope["raw_path"]
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        try:
            resp = await self.lean.request(
                self.upstream, scope["method"].encode(), path, b"".join(lines), body
            )
        except (UpstreamError, TimeoutError):
            await _respond(send, 502, _FAILED)
            return
        try:
            # Body bytes pass through untouched (nothing asks for compression), so
            # Content-Length holds.
            out = [(k, v) for k, v in resp.headers if k not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for data in resp.chunks():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            resp.release()

    async def _via_aiohttp(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        assert self.session is not None
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in _REQUEST_DROP]
        headers.append(("Authorization", self.upstream_auth))
        url = self.upstream + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        try:
            async with self.session.request(
                scope["method"], url, data=body, headers=headers
            ) as resp:
                # Body bytes pass through untouched (no decompression), so Content-Length holds.
                out = [(k, v) for k, v in resp.raw_headers if k.lower() not in _HOP_BY_HOP]
                await send({"type": "http.response.start", "status": resp.status, "headers": out})
                async for data in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except aiohttp.ClientError:
            await _respond(send, 502, _FAILED)


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create() -> BareProxy:
    """uvicorn factory (each worker builds its own proxy from the environment)."""
    env = os.environ
    return BareProxy(
        env["BARE_UPSTREAM"],
        env["BARE_KEY"],
        env["BARE_UPSTREAM_KEY"],
        env["BARE_CLIENT"],
        env.get("BARE_CA_BUNDLE") or None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:9000")
    parser.add_argument("--key", required=True, help="the one client key accepted")
    parser.add_argument("--upstream-key", required=True)
    parser.add_argument("--client", choices=("tollway", "aiohttp"), default="tollway")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--ca-bundle", default="", help="PEM of CAs for an https:// upstream")
    args = parser.parse_args()
    os.environ.update(
        BARE_UPSTREAM=args.upstream,
        BARE_KEY=args.key,
        BARE_UPSTREAM_KEY=args.upstream_key,
        BARE_CLIENT=args.client,
        BARE_CA_BUNDLE=args.ca_bundle,
    )
    uvicorn.run(
        "bare_proxy:create",
        factory=True,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http=TollwayHttpProtocol if args.client == "tollway" else "httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # as `tollway serve`: no X-Forwarded-* rewriting per request
        log_level="warning",
    )


if __name__ == "__main__":
    main()
