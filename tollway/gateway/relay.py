"""Send a request to the upstreams that serve it, failing over before the first byte."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from tollway.core.errors import GatewayError, upstream_timeout, upstream_unreachable
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

from .asgi import Headers
from .body import RequestInfo, body_for

# Never forwarded to an upstream: hop-by-hop headers, the client's credentials, and what
# aiohttp sets itself.
DROP_REQUEST = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"accept-encoding",
        b"authorization",
        b"x-api-key",
        b"api-key",
        b"cookie",
        b"x-request-id",
    }
)

# Never passed back to the client: hop-by-hop headers and what we recompute (aiohttp has
# already decompressed the body, and we set the length ourselves).
DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"content-encoding",
        b"x-request-id",
        b"server",
        b"date",
        b"set-cookie",
    }
)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
KEY_REJECTED_STATUS = frozenset({401, 402, 403})


@dataclass(slots=True)
class Attempt:
    """The upstream response the client will get, and how we got there."""

    upstream: Upstream
    response: aiohttp.ClientResponse
    attempts: int
    started: float  # perf_counter when the successful attempt began


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Relay:
    def __init__(
        self,
        pool: Pool,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def forward_headers(self, headers: Headers, up: Upstream, request_id: str) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in headers:
            if name not in DROP_REQUEST:
                out.add(name.decode("latin-1"), value.decode("latin-1"))
        if up.auth_header:
            out["Authorization"] = up.auth_header.decode("latin-1")
        out["X-Request-Id"] = request_id
        return out

    async def send(
        self,
        method: str,
        subpath: str,
        query: bytes,
        headers: Headers,
        body: bytes,
        info: RequestInfo,
        candidates: list[Upstream],
        request_id: str,
    ) -> Attempt:
        """The first upstream answer worth giving the client. Connection errors, timeouts,
        5xx, 429 and rejected upstream keys move on to the next candidate."""
        assert self.session is not None, "relay not started"
        last_error: GatewayError | None = None
        tries = candidates[: self.max_attempts]
        for number, up in enumerate(tries, start=1):
            url = up.base_url + subpath
            if query:
                url += "?" + query.decode("latin-1")
            upstream_model = up.upstream_model(info.model) if info.model is not None else None
            payload = body_for(info, body, upstream_model)
            started = time.perf_counter()
            up.in_flight += 1
            try:
                response = await self.session.request(
                    method,
                    url,
                    headers=self.forward_headers(headers, up, request_id),
                    data=payload if payload else None,
                    allow_redirects=False,
                    timeout=self.timeout,
                )
            except TimeoutError:
                up.in_flight -= 1
                self.pool.on_failure(up)
                last_error = upstream_timeout()
                continue
            except aiohttp.ClientError:
                up.in_flight -= 1
                self.pool.on_failure(up)
                last_error = upstream_unreachable()
                continue
            except BaseException:
                up.in_flight -= 1
                raise
            status = response.status
            retryable = status in RETRYABLE_STATUS or status in KEY_REJECTED_STATUS
            if not retryable:
                return Attempt(up, response, number, started)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.pool.on_failure(up, retry_after if status == 429 else None)
            if number == len(tries):
                if status in KEY_REJECTED_STATUS:
                    # The upstream refused *our* key: not the client's business, and its
                    # message may quote the key.
                    await self.release(up, response)
                    raise GatewayError(
                        502,
                        f"Upstream `{up.name}` rejected Tollway's credentials (HTTP {status}).",
                        "upstream_error",
                        "upstream_auth_failed",
                    )
                return Attempt(up, response, number, started)
            await self.release(up, response)
        if last_error is None:
            raise GatewayError(503, "No upstream is available.", "service_unavailable_error")
        raise last_error

    async def release(self, up: Upstream, response: aiohttp.ClientResponse) -> None:
        up.in_flight -= 1
        response.release()
