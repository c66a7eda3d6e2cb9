"""Which narrower rollups exist and which one a report reads (migration 0010).

The full rollups (`usage_rollups`, `usage_rollups_daily`) keep one row per
key/model/upstream/endpoint and bucket: with a few hundred keys that is thousands of rows an
hour, and a global 30-day view summed them all. The cube tables keep the same counters summed
over fewer dimensions ("shapes", a bit mask of the dimensions a row keeps), and the latency
tables keep per-bucket request counts for percentiles. The usage writer fills all of them from
the same inserted rows, in the same transaction.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from sqlalchemy import literal_column

KEY, MODEL, UPSTREAM, ENDPOINT = 1, 2, 4, 8
FULL = KEY | MODEL | UPSTREAM | ENDPOINT  # the full rollup tables, not the cube
DIM_BITS = {"key_id": KEY, "model": MODEL, "upstream": UPSTREAM, "endpoint": ENDPOINT}

# Kept in the cube, smallest first: in all; per key (top keys); per model/upstream/endpoint
# (every breakdown but keys, filtered by model and/or upstream or not); per key and upstream
# (top keys of one upstream). Top keys of one model read the full rollups by (model, hour):
# a model's rows are a few per key, and a per-key-and-model shape would add a few hundred
# upserted rows to every batch of the usage writer.
CUBE_SHAPES = (0, KEY, MODEL | UPSTREAM | ENDPOINT, KEY | UPSTREAM)
# Latency histograms: in all, per key, per model, per upstream, per model and upstream. A key
# with another filter reads the key's raw rows (by its (key_id, id) index) instead.
LATENCY_SHAPES = (0, KEY, MODEL, UPSTREAM, MODEL | UPSTREAM)


def mask(names: set[str] | frozenset[str]) -> int:
    return sum(DIM_BITS[n] for n in names)


def pick_shape(needed: set[str], filtered: set[str]) -> int:
    """The smallest shape holding every dimension a query groups by or filters on (`needed`
    includes `filtered`). A key filter reads the per-key shape (by its partial key index) when
    nothing else is needed, else the full rollups by their (key_id, hour) index: one key's
    rows are few, and the other shapes are not indexed by key."""
    want = mask(needed)
    if "key_id" in filtered:
        return KEY if want == KEY else FULL
    for shape in CUBE_SHAPES:
        if want & ~shape == 0:
            return shape
    return FULL


def dims_is(column: Any, shape: int) -> Any:
    """`dims = <shape>` with the number in the SQL text: a bound parameter would keep SQLite
    and PostgreSQL's generic plans from using the partial per-key index."""
    return column == literal_column(str(int(shape)))


def pick_latency_shape(filtered: set[str]) -> int | None:
    """The latency shape for these filters, or None: read raw rows."""
    want = mask(filtered)
    return want if want in LATENCY_SHAPES else None


def project(shape: int, key_id: int, model: str, upstream: str, endpoint: str) -> tuple[Any, ...]:
    """A full rollup key's dimensions as `shape` keeps them (the others 0 or "")."""
    return (
        key_id if shape & KEY else 0,
        model if shape & MODEL else "",
        upstream if shape & UPSTREAM else "",
        endpoint if shape & ENDPOINT else "",
    )


# Latency buckets: 8 per doubling of the milliseconds (bucket b holds [2^(b/8), 2^((b+1)/8)),
# bucket 0 everything under 2^(1/8) ms), so a percentile read from them is within ±4.4 %.
PER_DOUBLING = 8
TOP_BUCKET = 255  # 2^(255/8) ms is about 45 days: the last bucket holds everything above
BOUNDS = tuple(2 ** (b / PER_DOUBLING) for b in range(1, TOP_BUCKET + 1))


def latency_bucket(ms: float) -> int:
    """The bucket of a latency. The migration's backfill uses the same BOUNDS."""
    return bisect_right(BOUNDS, ms)


def bucket_bounds(b: int) -> tuple[float, float]:
    lo = 0.0 if b <= 0 else BOUNDS[b - 1]
    hi = BOUNDS[b] if b < TOP_BUCKET else math.inf
    return lo, hi


def bucket_value(b: int) -> float:
    """What a bucket reports: its geometric middle (at most 4.4 % from any value in it)."""
    return float(2 ** ((b + 0.5) / PER_DOUBLING))
