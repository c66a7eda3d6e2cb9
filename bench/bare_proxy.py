"""Reference "bare pass-through" hop: the least a Python proxy can do per request.

A raw ASGI app on uvicorn (uvloop + httptools) that checks one static bearer key and forwards
the request through one pooled aiohttp ClientSession, streaming the response back unchanged.
No routing, no limits, no accounting: the gap between this and Tollway is Tollway's own cost.

    python bench/bare_proxy.py --port 9001 --upstream http://127.0.0.1:9000 \
        --key sk-client --upstream-key sk-upstream
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

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


class BareProxy:
    def __init__(self, upstream: str, key: str, upstream_key: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.expected_auth = f"Bearer {key}".encode()
        self.upstream_auth = f"Bearer {upstream_key}"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
                self.session = aiohttp.ClientSession(
                    connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout()
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self.session is not None
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

        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in _REQUEST_DROP]
        headers.append(("Authorization", self.upstream_auth))
        url = self.upstream + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()

        try:
            async with self.session.request(
                scope["method"], url, data=b"".join(chunks), headers=headers
            ) as resp:
                # Body bytes pass through untouched (no decompression), so Content-Length holds.
                out = [(k, v) for k, v in resp.raw_headers if k.lower() not in _HOP_BY_HOP]
                await send({"type": "http.response.start", "status": resp.status, "headers": out})
                async for data in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except aiohttp.ClientError:
            await _respond(send, 502, b'{"error":{"message":"upstream failed"}}')


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:9000")
    parser.add_argument("--key", required=True, help="the one client key accepted")
    parser.add_argument("--upstream-key", required=True)
    args = parser.parse_args()
    uvicorn.run(
        BareProxy(args.upstream, args.key, args.upstream_key),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
