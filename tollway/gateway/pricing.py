"""The price book: USD per million tokens per model, from the YAML config's `prices:` section
and the model_prices table (the database wins). A model without a price costs None (unknown),
never 0."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tollway.core.types import UsageEvent


@dataclass(slots=True, frozen=True)
class Price:
    input: float  # per 1M prompt tokens
    output: float  # per 1M completion tokens
    cached_input: float | None = None  # per 1M cached prompt tokens; None = same as input
    cache_write: float | None = None  # per 1M prompt tokens written to the cache; None = input


def cost_usd(
    price: Price,
    prompt: int | None,
    completion: int | None,
    cached: int | None,
    cache_write: int | None = None,
) -> float:
    prompt = prompt or 0
    cached = min(cached or 0, prompt)  # cached tokens are part of the prompt
    written = min(cache_write or 0, prompt - cached)  # so are the tokens written to the cache
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    write_rate = price.cache_write if price.cache_write is not None else price.input
    fresh = prompt - cached - written
    total = (
        fresh * price.input
        + cached * cached_rate
        + written * write_rate
        + (completion or 0) * price.output
    )
    return total / 1_000_000


class PriceBook:
    """The gateway's PriceFn: called once per request whose usage is known."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = dict(prices or {})

    def replace(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)  # one assignment: requests see the old or the new book

    def get(self, model: str) -> Price | None:
        return self._prices.get(model)

    def __len__(self) -> int:
        return len(self._prices)

    def __call__(self, event: UsageEvent) -> float | None:
        prices = self._prices
        price = prices.get(event.model) if event.model is not None else None
        if price is None and event.upstream_model is not None:
            price = prices.get(event.upstream_model)
        if price is None:
            return None
        return cost_usd(
            price,
            event.prompt_tokens,
            event.completion_tokens,
            event.cached_tokens,
            event.cache_write_tokens,
        )


class _PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    cached_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class PriceConfigError(ValueError):
    pass


def prices_from_config(path: Path | None) -> dict[str, Price]:
    """The `prices:` section: `model: {input: 3, output: 15, cached_input: 0.3,
    cache_write: 3.75}`."""
    if path is None:
        return {}
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PriceConfigError(f"cannot read config {path}: {exc}") from exc
    section = raw.get("prices") if isinstance(raw, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise PriceConfigError(f"{path}: `prices` must map model names to prices")
    out: dict[str, Price] = {}
    for model, entry in section.items():
        try:
            p = _PriceEntry.model_validate(entry)
        except ValidationError as exc:
            raise PriceConfigError(f"{path}: prices.{model}: {exc}") from exc
        out[str(model)] = Price(p.input, p.output, p.cached_input, p.cache_write)
    return out
