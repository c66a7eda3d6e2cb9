"""In-process limits: exact for one process, nothing shared. Check-then-charge runs without an
await in between, so on one event loop it is atomic."""

from __future__ import annotations

import time

from tollway.core.types import KeyLimits, KeyRecord

from ..limits import NO_ADMISSION, Admission
from .policy import Refusal, rate_headers, refusal_error
from .seed import Seeder, SeedFn, no_history
from .windows import DAY, MINUTE, Clock, Periods, Span, leaves_at


class Window:
    """A sliding window as a flat list of (bucket, count) pairs, oldest first, with a
    running total. Flat and a list, not a deque of pairs: a key uses up to four windows and
    a deque is ~620 bytes even when empty; with a hundred thousand keys in use, the windows
    were most of the process's memory. Evicting deletes a slice (rare: one bucket per step)."""

    __slots__ = ("flat", "span", "total")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.flat: list[int] = []  # bucket, count, bucket, count, ...
        self.total = 0

    def evict(self, now_ms: int) -> int:
        flat = self.flat
        if flat:
            keep = now_ms // self.span.step_ms - self.span.buckets
            if flat[0] < keep:
                i, end, total = 0, len(flat), self.total
                while i < end and flat[i] < keep:
                    total -= flat[i + 1]
                    i += 2
                del flat[:i]
                self.total = total
        return self.total

    def add(self, now_ms: int, n: int) -> None:
        idx = now_ms // self.span.step_ms
        flat = self.flat
        if flat and flat[-2] == idx:
            flat[-1] += n
        else:
            flat.append(idx)
            flat.append(n)
        self.total += n

    def retry_ms(self, now_ms: int, limit: int) -> int:
        """Until the total drops below `limit` (call after evict)."""
        if limit <= 0:
            return self.span.window_ms
        excess = self.total - limit + 1
        freed = 0
        flat = self.flat
        for i in range(0, len(flat), 2):
            freed += flat[i + 1]
            if freed >= excess:
                return leaves_at(flat[i], self.span) - now_ms
        return 0

    def reset_ms(self, now_ms: int) -> int:
        """Until the window is empty again."""
        if not self.flat:
            return 0
        return leaves_at(self.flat[-2], self.span) - now_ms


class KeyState:
    __slots__ = (
        "budget_kind",
        "budget_start",
        "in_flight",
        "rpd",
        "rpm",
        "spent",
        "tokens",
        "tokens_seeded",
        "tpd",
        "tpm",
    )

    def __init__(self) -> None:
        self.rpm = Window(MINUTE)
        self.rpd = Window(DAY)
        self.tpm = Window(MINUTE)
        self.tpd = Window(DAY)
        self.tokens = 0  # used ever; tracked once seeded
        self.tokens_seeded = False
        self.spent = 0.0  # in the current budget period
        self.budget_kind: str | None = None  # None until seeded
        self.budget_start = 0.0
        self.in_flight = 0


def _tightest(
    limits: tuple[int | None, int | None], windows: tuple[Window, Window], now_ms: int
) -> tuple[int, int, float] | None:
    """(limit, remaining, reset ms) of the window with the least room left."""
    best: tuple[int, int, float] | None = None
    for limit, window in zip(limits, windows, strict=True):
        if limit is None:
            continue
        remaining = limit - window.total
        if best is None or remaining < best[1]:
            best = (limit, remaining, float(window.reset_ms(now_ms)))
    return best


class LocalLimiter:
    def __init__(self, seed: SeedFn = no_history, clock: Clock = time.time) -> None:
        self.clock = clock
        self._seed = Seeder(seed)
        self._periods = Periods()
        self._states: dict[int, KeyState] = {}

    def _state(self, key_id: int) -> KeyState:
        st = self._states.get(key_id)
        if st is None:
            st = self._states[key_id] = KeyState()
        return st

    async def _ensure_seeded(self, key: KeyRecord, lim: KeyLimits, st: KeyState) -> float:
        """Reads past usage when needed; returns the clock reading the checks should use."""
        now = self.clock()
        need_tokens = lim.token_quota is not None and not st.tokens_seeded
        start = self._periods.current(lim.budget_period, now)[0]
        need_budget = lim.budget_usd is not None and st.budget_kind != lim.budget_period
        if need_tokens or need_budget:
            tokens, cost = await self._seed(key.id, start)
            if need_tokens and not st.tokens_seeded:
                st.tokens, st.tokens_seeded = tokens, True
            if need_budget and st.budget_kind != lim.budget_period:
                st.budget_kind, st.budget_start, st.spent = lim.budget_period, start, cost
            now = self.clock()
        return now

    async def admit(self, key: KeyRecord, model: str | None) -> Admission:
        lim = key.limits
        if not lim.any():
            return NO_ADMISSION
        st = self._state(key.id)
        now = await self._ensure_seeded(key, lim, st)
        # From here to the charge there is no await: atomic on the event loop.
        now_ms = int(now * 1000)
        refusal = self._check(lim, st, now, now_ms)
        if refusal is not None:
            raise refusal_error(refusal, now)
        if lim.rpm is not None:
            st.rpm.add(now_ms, 1)
        if lim.rpd is not None:
            st.rpd.add(now_ms, 1)
        holds = lim.max_parallel is not None
        if holds:
            st.in_flight += 1
        req = _tightest((lim.rpm, lim.rpd), (st.rpm, st.rpd), now_ms)
        tok = _tightest((lim.tpm, lim.tpd), (st.tpm, st.tpd), now_ms)
        return Admission(rate_headers(req, tok), holds)

    def _check(self, lim: KeyLimits, st: KeyState, now: float, now_ms: int) -> Refusal | None:
        for name, limit, window in (
            ("rpm", lim.rpm, st.rpm),
            ("rpd", lim.rpd, st.rpd),
            ("tpm", lim.tpm, st.tpm),
            ("tpd", lim.tpd, st.tpd),
        ):
            if limit is not None and window.evict(now_ms) >= limit:
                return Refusal(name, limit, window.total, window.retry_ms(now_ms, limit))
        if lim.token_quota is not None and st.tokens >= lim.token_quota:
            return Refusal("quota", lim.token_quota, st.tokens, float("inf"))
        if lim.budget_usd is not None:
            start, end, _ = self._periods.current(lim.budget_period, now)
            if start > st.budget_start:  # a new period began: the budget is whole again
                st.budget_start, st.spent = start, 0.0
            if st.spent >= lim.budget_usd:
                retry = (end - now) * 1000.0
                return Refusal("budget", lim.budget_usd, st.spent, retry, lim.budget_period)
        if lim.max_parallel is not None and st.in_flight >= lim.max_parallel:
            return Refusal("parallel", lim.max_parallel, st.in_flight, 1000.0)
        return None

    async def settle(
        self, key: KeyRecord, admission: Admission, tokens: int | None, cost: float | None
    ) -> None:
        if admission is NO_ADMISSION:
            return
        st = self._state(key.id)
        if admission.holds_slot:
            st.in_flight -= 1
        lim = key.limits
        if tokens:
            now_ms = int(self.clock() * 1000)
            if lim.tpm is not None:
                st.tpm.add(now_ms, tokens)
            if lim.tpd is not None:
                st.tpd.add(now_ms, tokens)
            if st.tokens_seeded:
                st.tokens += tokens
        if cost and st.budget_kind is not None:
            st.spent += cost

    async def snapshot(self, key_id: int) -> dict[str, float]:
        """What the backend holds for a key (admin views and tests)."""
        st = self._states.get(key_id) or KeyState()
        return {"in_flight": st.in_flight, "tokens": st.tokens, "spent": st.spent}

    async def close(self) -> None:
        return None
