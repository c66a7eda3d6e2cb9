"""The pool's tunables, as plain data: strategies per model group, fallbacks, health timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

STRATEGIES = ("balance", "weighted", "least_busy", "latency", "round_robin")


@dataclass(slots=True)
class PoolPolicy:
    default_strategy: str = "balance"
    # (model patterns, strategy), first match wins; patterns are exact names or globs
    groups: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    cooldown_base: float = 1.0  # first cooldown after an error; doubles per failure
    cooldown_max: float = 60.0
    retry_after_max: float = 600.0  # an upstream's Retry-After is honoured up to this
    key_park: float = 300.0  # a rejected key (401/403) rests this long, doubling
    key_park_max: float = 3600.0
    exhausted_park: float = 600.0  # an account that answered "insufficient balance"
    min_balance_usd: float = 0.0  # at or below this, an account gets no traffic
    latency_explore: float = 0.05  # share of picks that re-measure other upstreams

    def strategy_for(self, model: str | None) -> str:
        if model is not None:
            for patterns, strategy in self.groups:
                for pattern in patterns:
                    if pattern == model or fnmatchcase(model, pattern):
                        return strategy
        return self.default_strategy
