"""One process-wide budget of request-body bytes held in memory at once.

Each body is held whole (it is parsed, and resent on failover), so ten concurrent 30 MB
bodies were 300 MB of request bodies alone. A request reserves its body's size before reading
it (by Content-Length; chunk by chunk when there is none) and gives it back when it ends; a
body that would not fit is refused with 503 and Retry-After. Costs two integer operations for
a small body.
"""

from __future__ import annotations

from tollway.core.errors import GatewayError


class BodyBudget:
    __slots__ = ("capacity", "held")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def reserve(self, size: int) -> None:
        """Take `size` bytes of the budget, or raise 503 (nothing taken)."""
        if self.held + size > self.capacity:
            raise budget_exhausted()
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


def budget_exhausted() -> GatewayError:
    return GatewayError(
        503,
        "Too many large requests are being received at once; retry shortly.",
        "service_unavailable_error",
        "server_busy",
        headers={"Retry-After": "1"},
    )
