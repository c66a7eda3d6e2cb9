"""What the playground offers: every model the pool can route, chat and embedding models told
apart, with their price when known. Read from the live pool (off the request path).

`GET /v1/models` leaves out what `"*"` upstreams serve (they name no models); here they add
the models model discovery found on them (`routing.discover_models`), and the page always
accepts a typed model name as well."""

from __future__ import annotations

import re
from typing import Any

from tollway.gateway.pricing import PriceBook
from tollway.upstreams.pool import Pool

# Embedding models by name: OpenAI text-embedding-*, and the families open-weight servers and
# gateways list (bge, e5, gte, nomic-embed, mxbai-embed, voyage, jina-embeddings...).
EMBEDDING = re.compile(r"embed|(^|[/_-])(bge|e5|gte|voyage)([/_.-]|$)", re.IGNORECASE)


def kind_of(model: str) -> str:
    """ "embedding" or "chat" (by name: most providers' /models say nothing about it)."""
    return "embedding" if EMBEDDING.search(model) else "chat"


def catalog(pool: Pool, prices: PriceBook | None) -> dict[str, Any]:
    now = pool.clock()
    names: set[str] = set()
    any_model: list[str] = []  # "*" upstreams: a typed name may go there
    for up in pool.upstreams:
        if not pool.in_rotation(up, now):
            continue
        names |= up.public_models()
        if up.models is None:
            any_model.append(up.name)
    for model, targets in pool.policy.fallbacks.items():
        if any(t in names for t in targets) or any_model:
            names.add(model)
    models = []
    for name in sorted(names):
        price = prices.get(name) if prices is not None else None
        models.append(
            {
                "id": name,
                "kind": kind_of(name),
                "price": None if price is None else {"input": price.input, "output": price.output},
            }
        )
    return {"models": models, "any_model_upstreams": any_model}
