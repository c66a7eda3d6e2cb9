"""One upstream (an OpenAI-compatible base URL with one API key) and the account it bills to,
each with its live state. Slotted dataclasses: the hot path reads these fields directly."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Account:
    """Who pays: keys of one account share one credit balance (Vercel reports the team's)."""

    name: str
    probe: str | None = None  # "vercel" | "openrouter" | "manual" | None (no balance known)
    balance_usd: float | None = None  # last probed balance; None = unknown
    manual_base_usd: float | None = None  # a manual balance as configured...
    spent_usd: float = 0.0  # ...minus the recorded cost since it was set
    checked_at: float | None = None  # wall clock of the last probe
    probe_error: str | None = None
    exhausted_until: float = 0.0  # out of rotation after an "insufficient balance" answer
    exhausted_at_balance: float | None = None  # a probe above this means someone topped up

    def available(self) -> float | None:
        """Remaining credit in USD, or None when nothing is known."""
        if self.manual_base_usd is not None:
            return self.manual_base_usd - self.spent_usd
        return self.balance_usd


@dataclass(slots=True, eq=False)
class Upstream:
    name: str
    base_url: str  # as the openai SDK takes it, e.g. http://127.0.0.1:8001/v1 (no trailing /)
    api_key: str = ""
    models: frozenset[str] | None = None  # None: serves every model
    aliases: dict[str, str] = field(default_factory=dict)  # public name -> upstream model name
    weight: float = 1.0
    account: str | None = None  # keys of one account share one credit balance
    serves_modelless: bool = False  # files, batches, assistants... (requests without a model)
    provider: str = "openai"  # openai | vercel | openrouter | anything else
    source: str = "config"  # config | pocketbase | database
    rpm: int | None = None  # the provider's request cap for this key, per minute
    tpm: int | None = None  # the provider's token cap for this key, per minute
    manual_balance_usd: float | None = None
    db_id: int | None = None

    # Live state (one process)
    in_flight: int = 0
    cooldown_until: float = 0.0  # monotonic; passive health after errors / 429
    consecutive_failures: int = 0
    parked_until: float = 0.0  # key rejected (401/403): out of rotation until then
    rejections: int = 0
    latency_ewma_ms: float | None = None
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    discovered_models: frozenset[str] | None = None  # from the upstream's own /v1/models
    # Per-minute windows for rpm/tpm: [minute, this minute's count, the previous one's]
    req_window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    tok_window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    acct: Account = field(default_factory=lambda: Account(""))
    auth_header: bytes = b""

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.auth_header = f"Bearer {self.api_key}".encode() if self.api_key else b""

    def settings_key(self) -> tuple[object, ...]:
        """Everything configured (none of the live state): equal means "the same upstream"."""
        return (
            self.name,
            self.base_url,
            self.api_key,
            self.models,
            sorted(self.aliases.items()),
            self.weight,
            self.account,
            self.serves_modelless,
            self.provider,
            self.source,
            self.rpm,
            self.tpm,
            self.manual_balance_usd,
            self.db_id,
        )

    @property
    def account_name(self) -> str:
        """Upstreams without an account are their own account."""
        return self.account or f"upstream:{self.name}"

    def serves(self, model: str | None) -> bool:
        if model is None:
            return self.serves_modelless or self.models is None
        return self.models is None or model in self.models or model in self.aliases

    def upstream_model(self, model: str) -> str:
        return self.aliases.get(model, model)

    def public_models(self) -> set[str]:
        return set(self.models or self.discovered_models or ()) | set(self.aliases)

    def probe_kind(self) -> str | None:
        """Which balance probe applies: explicit provider, a manual balance, or the host."""
        if self.manual_balance_usd is not None:
            return "manual"
        if self.provider in ("vercel", "openrouter"):
            return self.provider
        if "ai-gateway.vercel.sh" in self.base_url:
            return "vercel"
        if "openrouter.ai" in self.base_url:
            return "openrouter"
        return None
