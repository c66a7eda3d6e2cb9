"""What many keys cost in memory, counted by tracemalloc in this process (many_keys.py).

The key cache is filled through `KeyCache.lookup` with records built by the gateway's own
`key_record_from_row` from the benchmark database's rows (so the strings, limits and entries
are what a server holds), then the in-process limiter admits and settles one request per
key. Counted: every allocation still alive after each step (Python objects only; the
server's RSS figure adds the allocator's slack and fragmentation).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from pathlib import Path

from sqlalchemy import create_engine, select

from tollway.core.settings import Settings
from tollway.core.types import KeyRecord
from tollway.gateway.auth import KeyCache
from tollway.gateway.limiting.local import LocalLimiter
from tollway.store.queries import _KEY_COLUMNS, key_record_from_row
from tollway.store.tables import api_keys

CHUNK = 500


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _fill(db: Path, raws: list[str], size: int) -> tuple[int, int, int]:
    engine = create_engine(f"sqlite:///{db}")
    stmt = select(api_keys.c.key_hash, *_KEY_COLUMNS)
    with engine.connect() as conn:
        conn.execute(stmt.where(api_keys.c.key_hash == "")).all()  # compile caches: not counted
        tracemalloc.start()
        base = _traced()

        async def load(digests: list[str]) -> dict[str, KeyRecord]:
            rows = conn.execute(stmt.where(api_keys.c.key_hash.in_(digests)))
            return {str(row.key_hash): key_record_from_row(row) for row in rows}

        cache = KeyCache(load, size=size)
        records: list[KeyRecord] = []
        for start in range(0, len(raws), CHUNK):  # one loop turn's misses: one read
            got = await asyncio.gather(*(cache.lookup(r) for r in raws[start : start + CHUNK]))
            assert all(got), "a benchmark key was not found"
            records.extend(r for r in got if r is not None)
        cached = _traced() - base - sys.getsizeof(records)
        limiter = LocalLimiter()
        before = _traced()
        for record in records:
            admission = await limiter.admit(record, "bench-model")
            await limiter.settle(record, admission, 30, 0.00002)
        limited = _traced() - before
        tracemalloc.stop()
    engine.dispose()
    return cached, limited, len(cache._entries)


def measure(db: Path, keys_file: Path) -> str:
    size = Settings().key_cache_size
    raws = keys_file.read_text().split()[:size]  # more would only be evicted again
    cached, limited, held = asyncio.run(_fill(db, raws, size))
    n = len(raws)
    mb = 2**20
    return (
        f"Memory (tracemalloc, Python objects): key cache {cached / mb:.1f} MB for {held:,}"
        f" cached keys ({cached / max(held, 1):.0f} B a key; size limit {size:,}); the"
        f" in-process limiter's state {limited / mb:.1f} MB for {n:,} keys after one request"
        f" each ({limited / n:.0f} B a key, every limit set)."
    )
