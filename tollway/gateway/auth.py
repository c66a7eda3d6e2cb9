"""Client key authentication from an in-process cache; the database is asked only on a miss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tollway.core.errors import GatewayError, invalid_api_key
from tollway.core.secrets import hash_key
from tollway.core.types import KeyRecord

from .asgi import Headers
from .auth_throttle import InvalidKeyThrottle
from .key_lru import KeyLRU

KeyLoader = Callable[[str], Awaitable[KeyRecord | None]]


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
        loader: KeyLoader,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        size: int = 100_000,
        negative_size: int = 10_000,
        throttle: InvalidKeyThrottle | None = None,
    ) -> None:
        self._loader = loader
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries = KeyLRU(size, negative_size)
        self.throttle = throttle or InvalidKeyThrottle(0, 60.0)
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._pending.clear()  # loads in flight may hold old records: they must not store

    def invalidate(self, digest: str) -> None:
        """Forget one key (by its hash). A load of it already in flight read the database
        before the change: it is detached, so it cannot store its (stale) record, and the
        next lookup reads again."""
        self._entries.pop(digest, None)
        self._pending.pop(digest, None)

    async def lookup(self, raw_key: str, client: str | None = None) -> KeyRecord | None:
        digest = hash_key(raw_key)
        entry = self._entries.get(digest)
        now = time.monotonic()
        if entry is not None and entry[1] > now:
            return entry[0]
        if client is not None:
            self.throttle.check(client)  # 429 for a guessing address, before the database
        pending = self._pending.get(digest)
        if pending is not None:  # one database read per key, however many arrive at once
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            record = await self._loader(digest)
            if self._pending.get(digest) is future:  # not invalidated while it was loading
                ttl = self._ttl if record is not None else self._negative_ttl
                self._entries[digest] = (record, time.monotonic() + ttl)
            future.set_result(record)
            return record
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            if self._pending.get(digest) is future:
                del self._pending[digest]

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
