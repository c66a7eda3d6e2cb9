"""Invalid API keys, throttled per client address.

Every unknown key costs a database read (it cannot be in the cache); a client trying random
keys would turn each request into one. After `limit` invalid keys from one address within
`window` seconds, that address's keys that are not in the cache are refused with 429 until the
window ends, without reading the database. A key already cached still works (a client behind
the same address as a guesser keeps its service). IPv6 addresses count per /64 (one host
usually holds a whole /64). Memory is bounded: the least recently failing addresses are
forgotten first.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict

from tollway.core.errors import GatewayError

MAX_ADDRESSES = 100_000


class InvalidKeyThrottle:
    __slots__ = ("_seen", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit  # 0: off
        self.window = window
        # address -> (invalid keys in the window, when the window began)
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def check(self, address: str) -> None:
        """Raise 429 when `address` has used up its invalid keys for this window."""
        entry = self._seen.get(_group(address)) if self._seen else None
        if entry is None or entry[0] < self.limit:
            return
        wait = entry[1] + self.window - time.monotonic()
        if wait > 0:
            raise too_many_invalid_keys(wait)

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        group = _group(address)
        now = time.monotonic()
        count, began = self._seen.pop(group, (0, now))
        if now - began >= self.window:
            count, began = 0, now
        self._seen[group] = (count + 1, began)
        if len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)


def _group(address: str) -> str:
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    except ValueError:
        return address


def too_many_invalid_keys(wait: float) -> GatewayError:
    seconds = max(1, math.ceil(wait))
    return GatewayError(
        429,
        f"Too many invalid API keys from this address. Retry after {seconds} s.",
        "invalid_request_error",
        "too_many_invalid_keys",
        headers={"Retry-After": str(seconds)},
    )
