"""Create the benchmark's Tollway client key with every limit set, through tollway.services.

    TOLLWAY_DATABASE_URL=... python bench/make_key.py   # prints {"key": ..., "limits": {...}}

Every limit is set so high that it never refuses a request: the limiting code runs on every
request (what a real deployment pays) without the benchmark measuring 429s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tollway.core.settings import get_settings
from tollway.services import keys
from tollway.store.db import create_engine

LIMITS: dict[str, Any] = {
    "rpm": 1_000_000_000,
    "rpd": 2_000_000_000,
    "tpm": 1_000_000_000,
    "tpd": 2_000_000_000,
    "token_quota": 10**15,
    "max_parallel": 100_000,
    "budget_usd": 1e9,
    "budget_period": "monthly",
}


async def main() -> None:
    engine = create_engine(get_settings().database_url)
    try:
        created = await keys.create_key(engine, {"name": "bench", **LIMITS})
    finally:
        await engine.dispose()
    print(json.dumps({"key": created.key, "id": created.info.id, "limits": LIMITS}))


if __name__ == "__main__":
    asyncio.run(main())
