"""Client key authentication from an in-process cache; the database is asked only on a miss.

Reads are batched: the misses of one event-loop turn go to the database as one query, so a
burst of keys never seen (a restart, a fleet of many keys) costs a read per batch, not per
key. A known key whose entry has outlived its TTL is answered from the cache while a
background read refreshes it, together with the other keys that expired around then:
requests never wait for a refresh, and each key in use costs one row per TTL, read in
batches. Changes made through Tollway reach the cache at once (key_changes.py); the TTL
bounds how long a change made around it, straight in the database, goes unseen: until the
first request after the TTL, whose refresh corrects the entry for the requests after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tollway.core.errors import GatewayError, invalid_api_key
from tollway.core.secrets import hash_key
from tollway.core.types import KeyRecord

from .asgi import Headers
from .auth_throttle import InvalidKeyThrottle
from .key_lru import Entry, KeyLRU

log = logging.getLogger("tollway.auth")

# Hashes -> the records of those that exist (one query); absent hashes are unknown keys.
KeysLoader = Callable[[list[str]], Awaitable[dict[str, KeyRecord]]]
KeyLoader = Callable[[str], Awaitable[KeyRecord | None]]

# Hashes per query. The rows become records on the event loop: 100 hold it ~1 ms, 500 ~6-12
# ms (a p99 spike for everyone else), and a query's fixed cost is ~10 rows' worth.
BATCH = 100
REFRESH_DELAY = 0.25  # s: expired keys gather this long, then one read refreshes them all
WARN_EVERY = 10.0  # s between warnings about failing refreshes


def one_by_one(loader: KeyLoader) -> KeysLoader:
    """A KeysLoader over a loader of one key (tests, embedders): the keys are read at once."""

    async def load(digests: list[str]) -> dict[str, KeyRecord]:
        records = await asyncio.gather(*(loader(d) for d in digests))
        return {d: r for d, r in zip(digests, records, strict=True) if r is not None}

    return load


def extract_key(headers: Headers) -> str | None:
    """`Authorization: Bearer <key>` or `x-api-key: <key>`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


class KeyCache:
    """hash -> (record or None, expiry). Unknown keys are cached too, briefly (negative cache).
    Both are bounded (least recently used dropped first), and invalid keys are throttled per
    client address before the database is asked."""

    def __init__(
        self,
        load: KeysLoader,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        size: int = 100_000,
        negative_size: int = 10_000,
        throttle: InvalidKeyThrottle | None = None,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries = KeyLRU(size, negative_size)
        self.throttle = throttle or InvalidKeyThrottle(0, 60.0)
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._misses: list[tuple[str, asyncio.Future[KeyRecord | None]]] = []  # this turn's
        self._stale: dict[str, Entry] = {}  # expired known keys to refresh -> the entry seen
        self._refreshing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = 0.0
        self.refreshed = 0  # keys refreshed in the background (tests, diagnostics)

    def clear(self) -> None:
        self._entries.clear()
        self._pending.clear()  # loads in flight may hold old records: they must not store
        self._stale.clear()

    def invalidate(self, digest: str) -> None:
        """Forget one key (by its hash). A load of it already in flight read the database
        before the change: it is detached, so it cannot store its (stale) record, and the
        next lookup reads again."""
        self._entries.pop(digest, None)
        self._pending.pop(digest, None)
        self._stale.pop(digest, None)

    async def close(self) -> None:
        """Stop the reads in flight and the refresh (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._refreshing = False  # a task cancelled before it began never ran its `finally`
        self._stale.clear()

    async def lookup(self, raw_key: str, client: str | None = None) -> KeyRecord | None:
        digest = hash_key(raw_key)
        entry = self._entries.get(digest)
        if entry is not None:
            record = entry[0]
            if entry[1] > time.monotonic():
                return record
            if record is not None:  # known: answered now, refreshed in the background
                if digest not in self._stale:
                    self._refresh_later(digest, entry)
                return record
        if client is not None:
            self.throttle.check(client)  # 429 for a guessing address, before the database
        future = self._pending.get(digest)
        if future is None:  # one database read per key, however many arrive at once
            loop = asyncio.get_running_loop()
            future = self._pending[digest] = loop.create_future()
            if not self._misses:
                loop.call_soon(self._read_misses)  # once this turn's misses are all in
            self._misses.append((digest, future))
        return await asyncio.shield(future)

    # -- reads -------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _read_misses(self) -> None:
        misses, self._misses = self._misses, []
        for start in range(0, len(misses), BATCH):
            self._spawn(self._read(misses[start : start + BATCH]))

    async def _read(self, batch: list[tuple[str, asyncio.Future[KeyRecord | None]]]) -> None:
        try:
            found = await self._load([digest for digest, _ in batch])
        except BaseException as exc:  # every waiter gets it; nothing is cached
            for digest, future in batch:
                if self._pending.get(digest) is future:
                    del self._pending[digest]
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # mark retrieved: waiters re-raise it themselves
            if not isinstance(exc, Exception):
                raise
            return
        now = time.monotonic()
        for digest, future in batch:
            record = found.get(digest)
            if self._pending.get(digest) is future:  # not invalidated while it was read
                del self._pending[digest]
                ttl = self._ttl if record is not None else self._negative_ttl
                self._entries[digest] = (record, now + ttl)
            if not future.done():
                future.set_result(record)

    def _refresh_later(self, digest: str, entry: Entry) -> None:
        self._stale[digest] = entry
        if not self._refreshing:
            self._refreshing = True
            self._spawn(self._refresh())

    async def _refresh(self) -> None:
        """Re-reads the expired keys in use, in batches, until none is waiting."""
        try:
            while self._stale:
                await asyncio.sleep(REFRESH_DELAY)
                waiting = list(self._stale.items())
                for start in range(0, len(waiting), BATCH):
                    await self._refresh_batch(waiting[start : start + BATCH])
        finally:
            self._refreshing = False

    async def _refresh_batch(self, batch: list[tuple[str, Entry]]) -> None:
        try:
            found: dict[str, KeyRecord] | None = await self._load([d for d, _ in batch])
        except Exception:  # the entries stay expired: their next use asks again
            found = None
            if time.monotonic() - self._warned > WARN_EVERY:
                self._warned = time.monotonic()
                log.warning("could not refresh cached keys", exc_info=True)
        expiry = time.monotonic() + self._ttl
        for digest, seen in batch:
            if self._stale.get(digest) is seen:
                del self._stale[digest]
            # Forgotten (a key change) or read anew meanwhile: that entry is newer.
            if found is None or self._entries.peek(digest) is not seen:
                continue
            record = found.get(digest)
            if record is None:
                self._entries.pop(digest)  # gone: its next use reads it like any miss
            else:
                self._entries[digest] = (record, expiry)
                self.refreshed += 1

    async def authenticate(
        self, headers: Headers, client: tuple[str, int] | None = None
    ) -> KeyRecord:
        raw = extract_key(headers)
        if raw is None:
            raise invalid_api_key(
                "Missing API key. Send it as `Authorization: Bearer <key>` or `x-api-key: <key>`."
            )
        address = client[0] if client else None
        record = await self.lookup(raw, address)
        if record is None:
            if address is not None:
                self.throttle.failed(address)
            raise invalid_api_key()
        if not record.enabled:
            raise GatewayError(403, "This API key is disabled.", "permission_error", "key_disabled")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise GatewayError(
                401, "This API key has expired.", "invalid_request_error", "key_expired"
            )
        return record
