"""The limits interface the hot path calls; backends live in tollway.gateway.limiting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tollway.core.types import KeyRecord

from .asgi import Headers


@dataclass(slots=True)
class Admission:
    """What `admit` granted: headers to add to the response and what `settle` must undo."""

    headers: Headers = field(default_factory=list)
    holds_slot: bool = False  # a concurrency slot to release
    lease: str = ""  # the slot's id in a shared backend (Redis)


NO_ADMISSION = Admission()


class Limiter(Protocol):
    async def admit(self, key: KeyRecord, model: str | None) -> Admission:
        """Reserve one request for `key`, or raise GatewayError(429)."""
        ...

    async def settle(
        self, key: KeyRecord, admission: Admission, tokens: int | None, cost: float | None
    ) -> None:
        """Charge the tokens and cost a finished request used and release its slot."""
        ...

    async def close(self) -> None: ...


class NoLimits:
    """Keys without any limit, or a gateway run without limits."""

    async def admit(self, key: KeyRecord, model: str | None) -> Admission:
        return NO_ADMISSION

    async def settle(
        self, key: KeyRecord, admission: Admission, tokens: int | None, cost: float | None
    ) -> None:
        return None

    async def close(self) -> None:
        return None
