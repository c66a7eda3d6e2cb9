"""Failed admin-secret attempts per client address: a handful per window, then refused
without checking the secret (guessing slows to a crawl). One per process, shared by the UI
login and the admin API, so the two faces do not add up to twice the guesses."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW = 300.0  # seconds
MAX_ADDRESSES = 10_000  # a flood of addresses must not grow memory without bound


class FailureThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int:
        """0 when `address` may try; else whole seconds until its oldest failure expires."""
        failures = self._failures.get(address)
        if failures is None:
            return 0
        now = self.clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0
        if len(failures) < self.max_failures:
            return 0
        return max(1, math.ceil(failures[0] + self.window - now))

    def fail(self, address: str) -> None:
        if address not in self._failures and len(self._failures) >= MAX_ADDRESSES:
            self._failures.clear()
        self._failures.setdefault(address, deque()).append(self.clock())
