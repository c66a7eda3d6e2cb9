"""Plain records shared by the layers. Slotted dataclasses: cheap on the hot path."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class KeyLimits:
    """A key's policy; None means unlimited."""

    rpm: int | None = None  # requests per minute
    rpd: int | None = None  # requests per day
    tpm: int | None = None  # tokens per minute
    tpd: int | None = None  # tokens per day
    token_quota: int | None = None  # total tokens, ever
    budget_usd: float | None = None  # spend per budget period
    budget_period: str = "none"  # none | daily | weekly | monthly
    max_parallel: int | None = None  # concurrent in-flight requests

    def any(self) -> bool:
        return any(
            v is not None
            for v in (
                self.rpm,
                self.rpd,
                self.tpm,
                self.tpd,
                self.token_quota,
                self.budget_usd,
                self.max_parallel,
            )
        )


@dataclass(slots=True, frozen=True)
class KeyRecord:
    """What the hot path knows about an authenticated client key."""

    id: int
    name: str
    prefix: str
    enabled: bool = True
    email: str | None = None
    expires_at: float | None = None  # unix seconds
    models: frozenset[str] | None = None  # allow-list; None = all
    limits: KeyLimits = field(default_factory=KeyLimits)
    response_cache: bool = False  # answer identical requests from the response cache


@dataclass(slots=True)
class UsageEvent:
    """One row of the usage log, produced once per proxied request."""

    ts: float
    request_id: str
    key_id: int | None
    method: str
    endpoint: str
    model: str | None = None
    upstream: str | None = None
    upstream_model: str | None = None
    status: int = 0
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens read from the provider's cache
    cache_write_tokens: int | None = None  # prompt tokens written to it (Anthropic)
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 0
    error_type: str | None = None
    fallback_from: str | None = None
    # Request detail. The two marks are set on the hot path as perf_counter readings and made
    # relative (ms since the request began) when the event is emitted.
    admitted_ms: float | None = None  # limits admitted the request
    first_byte_ms: float | None = None  # the served upstream's response head arrived
    error_message: str | None = None  # failed rows: what the client was told (bounded later)
    # Failed attempts before the answer, [upstream, model, why]; None (no list) on success.
    failures: list[list[str | None]] | None = None
    cache_hit: bool = False  # answered from the response cache: no upstream, no cost
