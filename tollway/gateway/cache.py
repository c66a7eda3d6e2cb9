"""The exact response cache: an identical request (same key, endpoint and body once
normalised) is answered with the bytes the first one got, from memory or from Redis.

Opt-in: a key with `response_cache`, or a request with `x-tollway-cache: on`. Bypass:
`x-tollway-cache: off` or `Cache-Control: no-store` (neither read nor written),
`Cache-Control: no-cache` (not read; the fresh answer is stored). Only successful (200)
answers of chat completions, completions and embeddings are kept, a stream only when it
ended with `[DONE]` and no error. Scoped per client key: one client's prompts never answer
another's requests."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from tollway.core.settings import Settings
from tollway.core.types import KeyRecord

from .asgi import Headers

log = logging.getLogger("tollway.cache")

CACHEABLE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
# Body members that do not change the answer: left out of the fingerprint.
IGNORED_MEMBERS = frozenset({"user"})
HEADER = b"x-tollway-cache"


@dataclass(slots=True, frozen=True)
class CachePlan:
    key: str  # the fingerprint
    read: bool  # False: a fresh answer is fetched (and stored), as for `no-cache`


@dataclass(slots=True, frozen=True)
class Cached:
    content_type: bytes
    body: bytes  # the JSON answer, or the SSE bytes exactly as the first client got them

    def encode(self) -> bytes:
        return self.content_type + b"\n" + self.body

    @staticmethod
    def decode(data: bytes) -> Cached:
        content_type, _, body = data.partition(b"\n")
        return Cached(content_type, body)


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """A bounded LRU, by bytes; entries expire after their TTL (checked when read)."""

    def __init__(self, max_bytes: int, clock: Any = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.clock = clock
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        found = self.entries.get(key)
        if found is None:
            return None
        if found[0] <= self.clock():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return found[1]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (self.clock() + ttl, value)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.size -= len(value)

    async def close(self) -> None:
        self.entries.clear()
        self.size = 0


class RedisStore:
    """Shared by every instance on one Redis; Redis expires entries (`SET ... PX`). An
    unreachable Redis is a miss and nothing stored: the cache never fails a request."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:cache:"

    async def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = await self.client.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            log.warning("response cache read failed: %s", type(exc).__name__)
            return None
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("response cache write failed: %s", type(exc).__name__)

    async def close(self) -> None:
        await self.client.aclose()


class ResponseCache:
    def __init__(self, store: Store, ttl: float, max_entry_bytes: int) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entry_bytes = max_entry_bytes

    def plan(
        self, key: KeyRecord, headers: Headers, path: str, body: Callable[[], dict[str, Any]]
    ) -> CachePlan | None:
        """Whether (and how) this request uses the cache; None: not at all. `body` parses the
        request body (RequestInfo.parsed): only a request that uses the cache pays for it."""
        wanted = key.response_cache
        read = True
        for name, value in headers:
            if name == HEADER:
                choice = value.strip().lower()
                if choice == b"off":
                    return None
                wanted = wanted or choice == b"on"
            elif name == b"cache-control":
                value = value.lower()
                if b"no-store" in value:
                    return None
                if b"no-cache" in value:
                    read = False
        if not wanted or path not in CACHEABLE_PATHS:
            return None
        return CachePlan(fingerprint(key.id, path, body()), read)

    async def get(self, plan: CachePlan) -> Cached | None:
        if not plan.read:
            return None
        data = await self.store.get(plan.key)
        return Cached.decode(data) if data is not None else None

    async def put(self, plan: CachePlan, content_type: bytes, body: bytes) -> None:
        if len(body) <= self.max_entry_bytes:
            await self.store.put(plan.key, Cached(content_type, body).encode(), self.ttl)

    async def close(self) -> None:
        await self.store.close()


def fingerprint(key_id: int, path: str, body: dict[str, Any]) -> str:
    """The key id, the endpoint and the body in canonical form: orjson with sorted keys (at
    every depth), without the members that do not change the answer (`user`). So the same
    request sent with other spacing or member order matches; any other difference (a
    parameter, `stream`, `stream_options`) does not."""
    if IGNORED_MEMBERS.isdisjoint(body):
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    else:
        kept = {k: v for k, v in body.items() if k not in IGNORED_MEMBERS}
        canonical = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(b"%d\n%s\n" % (key_id, path.encode()))
    digest.update(canonical)
    return digest.hexdigest()


def build_cache(s: Settings) -> ResponseCache | None:
    """Off without a TTL; in Redis (shared by the instances) when there is one, else in this
    process's memory. One answer may take an eighth of the memory bound."""
    if s.cache_ttl <= 0:
        return None
    store: Store
    if s.redis_url:
        from .limiting import connect

        store = RedisStore(connect(s.redis_url, s.redis_timeout), s.redis_prefix)
    else:
        store = MemoryStore(s.cache_max_bytes)
    return ResponseCache(store, s.cache_ttl, max(1, s.cache_max_bytes // 8))
