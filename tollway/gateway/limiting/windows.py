"""Window and period arithmetic shared by both backends. Integer milliseconds throughout, so
the in-process code and the Redis Lua script (doubles) compute exactly the same buckets.

A sliding window of length W is kept as B = W/G buckets of G ms. An event in bucket k
counts until (k + 1) * G + W: never less than W after it happened, at most W + G. So no
window of length W ever holds more than the limit, and a refusal lasts at most G too long.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

Clock = Callable[[], float]  # wall-clock unix seconds; injectable for tests


@dataclass(slots=True, frozen=True)
class Span:
    window_ms: int
    step_ms: int

    @property
    def buckets(self) -> int:
        return self.window_ms // self.step_ms


MINUTE = Span(60_000, 100)  # 600 buckets of 100 ms
DAY = Span(86_400_000, 60_000)  # 1440 buckets of one minute


def leaves_at(bucket: int, span: Span) -> int:
    """When an event counted in `bucket` leaves the window (ms)."""
    return (bucket + 1) * span.step_ms + span.window_ms


# --- budget periods (calendar, UTC) -----------------------------------------------------------

PERIODS = ("none", "daily", "weekly", "monthly")
_DAY_S = 86_400


def period_bounds(kind: str, now: float) -> tuple[float, float]:
    """[start, end) of the budget period containing `now`; "none" never resets."""
    if kind == "daily":
        start = now // _DAY_S * _DAY_S
        return start, start + _DAY_S
    if kind == "weekly":
        days = int(now // _DAY_S)
        monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
        return float(monday * _DAY_S), float((monday + 7) * _DAY_S)
    if kind == "monthly":
        d = datetime.fromtimestamp(now, UTC)
        start = calendar.timegm((d.year, d.month, 1, 0, 0, 0))
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))
    return 0.0, float("inf")


class Periods:
    """period_bounds with a one-entry cache per kind: the hot path asks on every request."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, float, str]] = {}

    def current(self, kind: str, now: float) -> tuple[float, float, str]:
        """(start, end, tag); the tag names the period and changes when it rolls over."""
        hit = self._cache.get(kind)
        if hit is not None and hit[0] <= now < hit[1]:
            return hit
        start, end = period_bounds(kind, now)
        entry = (start, end, f"{kind}:{int(start)}")
        self._cache[kind] = entry
        return entry


# --- OpenAI-style durations -------------------------------------------------------------------


def duration(ms: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s", "2h3m4s"."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000.0
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    total = int(seconds + 0.999)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s"


def retry_after(ms: float) -> str:
    """Retry-After in whole seconds, rounded up, at least 1."""
    return str(max(1, int(-(-ms // 1000))))
