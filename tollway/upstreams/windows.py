"""Per-minute sliding-window counters for an upstream's rpm/tpm caps: two fixed buckets,
the previous one weighted by how much of it still overlaps the last 60 s. O(1), no I/O."""

from __future__ import annotations


def _roll(window: list[float], now: float) -> None:
    minute = now // 60.0
    if minute != window[0]:
        window[2] = window[1] if minute == window[0] + 1.0 else 0.0
        window[1] = 0.0
        window[0] = minute


def window_count(window: list[float], now: float) -> float:
    """Estimated count over the last 60 seconds."""
    _roll(window, now)
    return window[2] * (1.0 - (now % 60.0) / 60.0) + window[1]


def window_add(window: list[float], now: float, amount: float) -> None:
    _roll(window, now)
    window[1] += amount
