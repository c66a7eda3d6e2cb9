"""The set of upstreams, which ones serve a model, and in what order to try them."""

from __future__ import annotations

import random
import time

from .target import Upstream

BASE_COOLDOWN = 1.0
MAX_COOLDOWN = 60.0


class Pool:
    def __init__(self, upstreams: list[Upstream] | None = None) -> None:
        self._rng = random.Random()
        self.replace(upstreams or [])

    def replace(self, upstreams: list[Upstream]) -> None:
        """Swap in a new set, keeping the live state of upstreams that stay."""
        old = {u.name: u for u in getattr(self, "upstreams", [])}
        for up in upstreams:
            prev = old.get(up.name)
            if prev is not None:
                up.in_flight = prev.in_flight
                up.cooldown_until = prev.cooldown_until
                up.consecutive_failures = prev.consecutive_failures
                up.latency_ewma_ms = prev.latency_ewma_ms
        self.upstreams = upstreams
        self._by_model: dict[str | None, list[Upstream]] = {}

    def serving(self, model: str | None) -> list[Upstream]:
        cached = self._by_model.get(model)
        if cached is None:
            cached = [u for u in self.upstreams if u.serves(model)]
            self._by_model[model] = cached
        return cached

    def knows(self, model: str) -> bool:
        return bool(self.serving(model))

    def models(self) -> list[str]:
        names: set[str] = set()
        for up in self.upstreams:
            names |= up.public_models()
        return sorted(names)

    def candidates(self, model: str | None) -> list[Upstream]:
        """Upstreams to try, best first: healthy ones by weighted random order, then the
        cooled-down ones (a last resort beats a certain 503)."""
        serving = self.serving(model)
        if len(serving) <= 1:
            return serving
        now = time.monotonic()
        healthy = [u for u in serving if u.cooldown_until <= now and u.weight > 0]
        resting = sorted(
            (u for u in serving if u.cooldown_until > now and u.weight > 0),
            key=lambda u: u.cooldown_until,
        )
        return self._weighted_order(healthy) + resting

    def _weighted_order(self, ups: list[Upstream]) -> list[Upstream]:
        # Efraimidis-Spirakis: sort by u^(1/w) — a weighted random permutation in one pass.
        rnd = self._rng.random
        return sorted(ups, key=lambda u: rnd() ** (1.0 / u.weight), reverse=True)

    def on_success(self, up: Upstream, latency_ms: float) -> None:
        up.consecutive_failures = 0
        up.cooldown_until = 0.0
        prev = up.latency_ewma_ms
        up.latency_ewma_ms = latency_ms if prev is None else prev * 0.8 + latency_ms * 0.2

    def on_failure(self, up: Upstream, retry_after: float | None = None) -> None:
        up.consecutive_failures += 1
        if retry_after is not None:
            pause = min(retry_after, MAX_COOLDOWN * 10)
        else:
            pause = min(MAX_COOLDOWN, BASE_COOLDOWN * 2 ** (up.consecutive_failures - 1))
        up.cooldown_until = time.monotonic() + pause
