"""One upstream: an OpenAI-compatible base URL with one API key, plus its live state."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    provider: str = "openai"
    source: str = "config"

    # Live state (one process)
    in_flight: int = 0
    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    latency_ewma_ms: float | None = None
    auth_header: bytes = b""

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.auth_header = f"Bearer {self.api_key}".encode() if self.api_key else b""

    def serves(self, model: str | None) -> bool:
        if model is None:
            return self.serves_modelless or self.models is None
        return self.models is None or model in self.models or model in self.aliases

    def upstream_model(self, model: str) -> str:
        return self.aliases.get(model, model)

    def public_models(self) -> set[str]:
        return set(self.models or ()) | set(self.aliases)
