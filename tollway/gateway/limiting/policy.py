"""What both backends say to the client: rate-limit headers on success, and the 429 that names
the limit that was hit and when it resets. Backends only compute numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tollway.core.errors import GatewayError

from ..asgi import Headers
from .windows import duration, retry_after

# Limits in the order they are checked; backends report a refusal by this name.
RATE_NAMES = {
    "rpm": "requests per minute",
    "rpd": "requests per day",
    "tpm": "tokens per minute",
    "tpd": "tokens per day",
}


@dataclass(slots=True)
class Refusal:
    limit: str  # rpm | rpd | tpm | tpd | quota | budget | parallel
    allowed: float  # the limit's value
    used: float
    retry_ms: float  # until the request could succeed; inf when it never will by itself
    period: str = "none"  # budgets only


def rate_headers(req: tuple[int, int, float] | None, tok: tuple[int, int, float] | None) -> Headers:
    """OpenAI's x-ratelimit-* headers: (limit, remaining, reset ms) of the tightest window."""
    out: Headers = []
    if req is not None:
        out.append((b"x-ratelimit-limit-requests", str(req[0]).encode()))
        out.append((b"x-ratelimit-remaining-requests", str(max(0, req[1])).encode()))
        out.append((b"x-ratelimit-reset-requests", duration(req[2]).encode()))
    if tok is not None:
        out.append((b"x-ratelimit-limit-tokens", str(tok[0]).encode()))
        out.append((b"x-ratelimit-remaining-tokens", str(max(0, tok[1])).encode()))
        out.append((b"x-ratelimit-reset-tokens", duration(tok[2]).encode()))
    return out


def _when(now: float, retry_ms: float) -> str:
    at = datetime.fromtimestamp(now + retry_ms / 1000.0, UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def refusal_error(r: Refusal, now: float) -> GatewayError:
    if r.limit in RATE_NAMES:
        kind = "requests" if r.limit[0] == "r" else "tokens"
        message = (
            f"Rate limit reached for {RATE_NAMES[r.limit]} ({r.limit}): limit {int(r.allowed)}, "
            f"used {int(r.used)}. Please try again in {duration(r.retry_ms)}."
        )
        headers = {
            "retry-after": retry_after(r.retry_ms),
            f"x-ratelimit-limit-{kind}": str(int(r.allowed)),
            f"x-ratelimit-remaining-{kind}": "0",
            f"x-ratelimit-reset-{kind}": duration(r.retry_ms),
        }
        return GatewayError(429, message, kind, "rate_limit_exceeded", headers=headers)
    if r.limit == "parallel":
        message = (
            f"Too many concurrent requests for this API key: limit {int(r.allowed)} in flight. "
            "Please retry when one of them has finished."
        )
        return GatewayError(
            429, message, "requests", "concurrency_limit_exceeded", headers={"retry-after": "1"}
        )
    # Exhausted quota or budget: retrying soon cannot help, so tell the SDK not to.
    headers = {"x-should-retry": "false"}
    if r.limit == "quota":
        message = (
            f"You exceeded this API key's token quota: {int(r.used)} of {int(r.allowed)} "
            "tokens used. It does not reset; ask your administrator to raise it."
        )
    else:
        spent = f"${r.used:.4f} of ${r.allowed:.2f}"
        if r.period == "none" or r.retry_ms == float("inf"):
            message = (
                f"You exceeded this API key's budget: {spent} spent. It does not reset; "
                "ask your administrator to raise it."
            )
        else:
            message = (
                f"You exceeded this API key's {r.period} budget: {spent} spent. "
                f"It resets at {_when(now, r.retry_ms)}."
            )
            headers["retry-after"] = retry_after(r.retry_ms)
    return GatewayError(429, message, "insufficient_quota", "insufficient_quota", headers=headers)


def limits_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "Rate limits cannot be checked right now (the shared limit store is unreachable); "
        "requests from keys with limits are refused until it is back.",
        "service_unavailable_error",
        "limits_unavailable",
        headers={"retry-after": "1"},
    )
