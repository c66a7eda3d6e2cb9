"""Send a request to the upstreams that serve it, failing over before the first byte."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from tollway.core.errors import GatewayError, no_upstream, upstream_timeout, upstream_unreachable
from tollway.core.types import UsageEvent
from tollway.upstreams.egress import EgressDefaults
from tollway.upstreams.headers import HOP_BY_HOP
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream
from tollway.upstreams.verdict import JUDGED_STATUSES, key_rejected, out_of_credit

from .apis import order
from .asgi import Headers
from .body import RequestInfo, body_for
from .upstream_http import UpstreamClient, UpstreamError, UpstreamResponse

# Never passed back to the client: hop-by-hop headers and what we recompute (we set the
# length ourselves; a gzip/deflate body arrives decoded, see `endpoint.DROP_ENCODED` for
# encodings that pass through).
DROP_RESPONSE = HOP_BY_HOP | {
    b"content-length",
    b"content-encoding",
    b"x-request-id",
    b"server",
    b"date",
    b"set-cookie",
}

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_FAILURES = 10  # failed attempts kept for the request detail (max_attempts x fallbacks)
_WHY = {"ok": "", "credit": " out of credit", "key": " key rejected"}


def _failed(event: UsageEvent | None, up: Upstream, model: str | None, why: str) -> None:
    """Note one failed attempt on the event. Only failures pay: no list on success."""
    if event is None:
        return
    failures = event.failures
    if failures is None:
        failures = event.failures = []
    if len(failures) < MAX_FAILURES:
        failures.append([up.name, model, why])


@dataclass(slots=True)
class Attempt:
    """The upstream response the client will get, and how we got there."""

    upstream: Upstream
    response: UpstreamResponse
    attempts: int
    started: float  # perf_counter when the successful attempt began
    model: str | None = None  # the public model served: a fallback's when one was used


def parse_retry_after(value: bytes | None) -> float | None:
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
        first_byte_timeout: float | None = None,
        egress: EgressDefaults | None = None,
    ) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.client = UpstreamClient(
            connect_timeout, read_timeout, first_byte_timeout=first_byte_timeout, egress=egress
        )

    async def start(self) -> None:
        return None  # connections open on first use

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    def forward_headers(headers: Headers, up: Upstream, request_id: str) -> bytes:
        """The request's header lines for one upstream: the client's own minus what this
        upstream drops (`up.drop_request`: hop-by-hop, credentials, account selectors it does
        not pass, names it sets itself), the request id, then its precomputed fixed lines
        (our credentials, its configured headers, no compression asked for)."""
        drop = up.drop_request
        lines = [name + b": " + value + b"\r\n" for name, value in headers if name not in drop]
        lines.append(b"x-request-id: " + request_id.encode() + b"\r\n")
        lines.append(up.fixed_lines)
        return b"".join(lines)

    async def send(
        self,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: bytes,
        info: RequestInfo,
        candidates: list[Upstream],
        request_id: str,
        allowed: frozenset[str] | None = None,
        event: UsageEvent | None = None,
    ) -> Attempt:
        """The first upstream answer worth giving the client. Connection errors, timeouts,
        5xx, 429 and rejected keys move on: up to max_attempts upstreams of the model, then
        the same for each configured fallback model the client key may use. The last failed
        answer passes through when nothing better came. `path` follows the base URL's own
        path (e.g. b"/chat/completions?x=1" after b"/v1"). Failed attempts are noted on
        `event.failures` (upstream, model, why)."""
        pool = self.pool
        last_error: GatewayError | None = None
        held: Attempt | None = None  # the latest failed answer, kept to pass through
        held_verdict = ""
        number = 0
        model = info.model
        tries = candidates[: self.max_attempts]
        fallbacks = pool.fallbacks(model)
        next_fallback = 0
        while True:
            for up in tries:
                number += 1
                try:
                    response, started = await self._request(
                        method, path, headers, body, info, up, model, request_id
                    )
                except TimeoutError:
                    pool.on_failure(up, reason="timeout")
                    last_error = upstream_timeout()
                    _failed(event, up, model, "timeout")
                    continue
                except UpstreamError as exc:  # its reason and message name no secret
                    pool.on_failure(up, reason=exc.reason)
                    last_error = upstream_unreachable(exc.public)
                    _failed(event, up, model, exc.reason)
                    continue
                except BaseException:  # the client left, shutdown, or the request's own
                    # fault (a body only a full parse finds invalid, body.py): keep nothing
                    if held is not None:
                        await self.release(held.upstream, held.response)
                    raise
                attempt = Attempt(up, response, number, started, model)
                try:
                    verdict = await self._judge(attempt)
                except asyncio.CancelledError:
                    response.close()
                    up.in_flight -= 1
                    if held is not None:
                        await self.release(held.upstream, held.response)
                    raise
                if held is not None:
                    await self.release(held.upstream, held.response)
                    held = None
                if not verdict:
                    return attempt
                _failed(event, up, model, f"HTTP {response.status}{_WHY[verdict]}")
                held, held_verdict = attempt, verdict
            # This model is spent; on to the next fallback that has upstreams.
            tries = []
            while not tries and next_fallback < len(fallbacks):
                model = fallbacks[next_fallback]
                next_fallback += 1
                if allowed is None or model in allowed:
                    tries = pool.candidates(model)
                    if info.api != "openai" or pool.mixed_apis:
                        tries = order(tries, info)
                    tries = tries[: self.max_attempts]
            if not tries:
                break
        if held is not None:
            if held_verdict == "ok":
                if event is not None and event.failures:
                    event.failures.pop()  # it is the answer, not a failed attempt
                return held
            status = held.response.status
            await self.release(held.upstream, held.response)
            if held_verdict == "credit":
                raise GatewayError(
                    503,
                    "Every upstream account for this model is out of credit.",
                    "service_unavailable_error",
                    "upstream_out_of_credit",
                )
            # The upstream refused *our* key: not the client's business, and its message
            # may quote the key.
            raise GatewayError(
                502,
                f"Upstream `{held.upstream.name}` rejected Tollway's credentials (HTTP {status}).",
                "upstream_error",
                "upstream_auth_failed",
            )
        if last_error is None:
            raise no_upstream()
        raise last_error

    async def _request(
        self,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: bytes,
        info: RequestInfo,
        up: Upstream,
        model: str | None,
        request_id: str,
    ) -> tuple[UpstreamResponse, float]:
        upstream_model = up.upstream_model(model) if model is not None else None
        if info.foreign is not None and info.api not in up.apis:  # through translation
            path = info.foreign_path
            payload = orjson.dumps({**info.foreign, "model": upstream_model})
        else:
            payload = body_for(info, body, upstream_model)
            if up.azure is not None:  # deployment paths and api-version (upstreams/azure.py)
                path = up.azure.path(path, upstream_model)
        self.pool.on_attempt(up)
        started = time.perf_counter()
        up.in_flight += 1
        try:
            response = await self.client.request(
                up.base_url,
                method,
                path,
                self.forward_headers(headers, up, request_id),
                payload,
                up.egress,
            )
        except BaseException:
            up.in_flight -= 1
            raise
        return response, started

    async def _judge(self, attempt: Attempt) -> str:
        """ "" when the answer goes to the client; else why not, after telling the pool:
        "ok" (retryable, may still pass through), "key" or "credit" (never passes through).
        Only structured evidence parks a key or an account (see upstreams/verdict.py): a 403,
        or a 400 quoting the client's prompt, goes to that client and changes nothing."""
        up, response = attempt.upstream, attempt.response
        status = response.status
        if status < 400 or (status not in RETRYABLE_STATUS and status not in JUDGED_STATUSES):
            return ""
        if status in JUDGED_STATUSES:
            try:
                text = await response.read()  # small error bodies; kept for pass-through
            except (UpstreamError, TimeoutError):
                text = b""
            if out_of_credit(status, text):
                self.pool.on_exhausted(up, status)
                return "credit"
            if key_rejected(status, text):
                self.pool.on_key_rejected(up, status)
                return "key"
            if status not in RETRYABLE_STATUS:
                return ""
        if status == 429:
            retry_after = parse_retry_after(response.header(b"retry-after"))
            self.pool.on_failure(up, retry_after, "HTTP 429")
        else:  # a 5xx answer: the upstream is up; this model is what fails there
            self.pool.on_model_failure(up, attempt.model, f"HTTP {status}")
        return "ok"

    async def release(self, up: Upstream, response: UpstreamResponse) -> None:
        up.in_flight -= 1
        response.release()
