"""One upstream (an OpenAI-compatible base URL with one API key) and the account it bills to,
each with its live state. Slotted dataclasses: the hot path reads these fields directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from .azure import AzureRoute
from .egress import Egress
from .headers import auth_name, check_headers, check_value, client_drop_set, fixed_lines

KNOWN_APIS = frozenset({"openai", "anthropic"})


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
class ModelHealth:
    """One model's own trouble on one upstream: an upstream that answers 5xx for one model
    rests for that model only (pool.py). Kept only while the model has failures."""

    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    failures: int = 0
    last_error: str | None = None
    trial_until: float = 0.0  # half-open: the next trial is not handed out before this


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
    headers: dict[str, str] = field(default_factory=dict)  # sent on every request to it
    pass_headers: frozenset[str] = frozenset()  # account-selecting client headers it lets through
    auth: str = "bearer"  # where the key goes: bearer | x-api-key | header:<Name>
    apis: frozenset[str] = frozenset({"openai"})  # the request formats it speaks natively
    egress: Egress | None = None  # its own CA bundle / verify / proxy (None: the global ones)
    azure: AzureRoute | None = None  # provider "azure": deployment paths and api-version

    # Live state (one process)
    in_flight: int = 0
    cooldown_until: float = 0.0  # monotonic; passive health after errors / 429
    consecutive_failures: int = 0
    parked_until: float = 0.0  # key rejected (a 401 about our key): out of rotation until then
    rejections: int = 0
    latency_ewma_ms: float | None = None
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    discovered_models: frozenset[str] | None = None  # from the upstream's own /v1/models
    # Models in trouble here (public model name -> its health); empty when all are well.
    model_health: dict[str, ModelHealth] = field(default_factory=dict)
    # Per-minute windows for rpm/tpm: [minute, this minute's count, the previous one's]
    req_window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    tok_window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    acct: Account = field(default_factory=lambda: Account(""))
    auth_header: bytes = b""
    # Precomputed for the relay: client header names not forwarded, and the lines it appends.
    drop_request: frozenset[bytes] = frozenset()
    fixed_lines: bytes = b""

    def __post_init__(self) -> None:
        """Raises ValueError (naming the upstream, never a value) on a control character in
        anything that becomes a request line or header: nothing can inject a header line."""
        check_value(self.base_url, f"upstream {self.name}: base_url")
        check_value(self.api_key, f"upstream {self.name}: api_key")
        try:
            check_headers(self.headers, self.pass_headers)
        except ValueError as exc:
            raise ValueError(f"upstream {self.name}: {exc}") from None
        if self.provider == "azure":  # deployment paths; the key in `api-key`, not Bearer
            if self.azure is None:
                self.azure = AzureRoute()
            if self.auth == "bearer":
                self.auth = "header:api-key"
        field = auth_name(self.auth)  # ValueError on a bad style
        unknown = self.apis - KNOWN_APIS
        if unknown or not self.apis:
            raise ValueError(f"upstream {self.name}: apis must be among {sorted(KNOWN_APIS)}")
        self.base_url = self.base_url.rstrip("/")
        bearer = field == b"authorization"
        key = self.api_key.encode()
        self.auth_header = (b"Bearer " + key if bearer else key) if self.api_key else b""
        self.drop_request = client_drop_set(self.headers, self.pass_headers) | {field}
        self.fixed_lines = fixed_lines(self.auth_header, self.headers, field)

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
            sorted(self.headers.items()),
            sorted(self.pass_headers),
            self.auth,
            sorted(self.apis),
            self.egress,
            self.azure,
        )

    def auth_headers(self) -> dict[str, str]:
        """What background calls (health checks, discovery, probes) send: its configured
        headers and our key, the way this upstream takes it."""
        if not self.api_key:
            return dict(self.headers)
        name = "api-key" if self.azure is not None else "Authorization"
        value = self.api_key if self.azure is not None else f"Bearer {self.api_key}"
        return {**self.headers, name: value}

    def models_url(self) -> str:
        """Where its model list is (`GET`), for health checks and discovery."""
        if self.azure is not None:
            return self.base_url + self.azure.models_path()
        return self.base_url + "/models"

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
