"""Both limit backends against one contract, driven by a controllable clock: exact counts,
sliding windows without edge bursts, reset timing, daily windows, tokens, quotas, budgets,
concurrency. The Redis backend runs on real Redis."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from tollway.core.errors import GatewayError
from tollway.gateway.limiting import LocalLimiter
from tollway.gateway.limits import NO_ADMISSION, Admission

from .limits_support import Clock, CountingSeed, Factory, backend_factory, key

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, a whole minute


@pytest.fixture(params=[pytest.param("local"), pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    async for factory in backend_factory(request.param):
        yield factory


async def admitted(limiter: object, k: object, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            await limiter.admit(k, "m")  # type: ignore[attr-defined]
            ok += 1
        except GatewayError as exc:
            assert exc.status == 429
    return ok


async def refusal(limiter: object, k: object) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        await limiter.admit(k, "m")  # type: ignore[attr-defined]
    return err.value


async def test_key_without_limits_is_not_tracked(make: Factory) -> None:
    lim = make(Clock(T0))
    assert await lim.admit(key(), "m") is NO_ADMISSION
    await lim.settle(key(), NO_ADMISSION, 100, 1.0)  # nothing to do, nothing fails


async def test_exactly_rpm_of_concurrent_requests(make: Factory) -> None:
    clock = Clock(T0)
    a, b = make(clock), make(clock)  # two instances (Redis: sharing counters)
    k = key(rpm=10)
    limiters = [a, b] if a is not b and hasattr(a, "redis") else [a, a]
    results = await asyncio.gather(
        *(limiters[i % 2].admit(k, "m") for i in range(100)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, GatewayError)]
    assert len(ok) == 10 and len(refused) == 90
    assert {e.status for e in refused} == {429}
    assert {e.code for e in refused} == {"rate_limit_exceeded"}


async def test_refusal_names_the_limit_and_the_reset(make: Factory) -> None:
    clock = Clock(T0 + 30.0)
    lim = make(clock)
    k = key(rpm=3)
    assert await admitted(lim, k, 3) == 3
    clock.advance(20.0)
    err = await refusal(lim, k)
    assert err.type == "requests"
    assert "requests per minute (rpm): limit 3, used 3" in err.message
    assert "try again in 40.1s" in err.message  # counted until bucket end + 60 s
    assert err.headers["retry-after"] == "41"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-limit-requests"] == "3"


async def test_window_reset_timing(make: Factory) -> None:
    clock = Clock(T0 + 0.05)  # bucket [T0, T0 + 0.1): leaves the window at T0 + 60.1
    lim = make(clock)
    k = key(rpm=2)
    assert await admitted(lim, k, 2) == 2
    clock.now = T0 + 60.099
    await refusal(lim, k)
    clock.now = T0 + 60.1
    assert await admitted(lim, k, 3) == 2


async def test_no_double_burst_at_a_minute_edge(make: Factory) -> None:
    clock = Clock(T0 + 59.95)  # the end of one calendar minute
    lim = make(clock)
    k = key(rpm=10)
    assert await admitted(lim, k, 10) == 10
    clock.now = T0 + 60.0  # a fixed window would start afresh here and allow 10 more
    assert await admitted(lim, k, 10) == 0
    clock.now = T0 + 119.99
    assert await admitted(lim, k, 1) == 0
    clock.now = T0 + 120.0
    assert await admitted(lim, k, 11) == 10


async def test_window_slides(make: Factory) -> None:
    clock = Clock(T0)
    lim = make(clock)
    k = key(rpm=10)
    assert await admitted(lim, k, 5) == 5
    clock.advance(30.0)
    assert await admitted(lim, k, 6) == 5
    clock.now = T0 + 60.1  # only the first five have left
    assert await admitted(lim, k, 6) == 5
    err = await refusal(lim, k)
    assert "try again in 30s" in err.message


async def test_requests_per_day_slide_over_24_hours(make: Factory) -> None:
    clock = Clock(T0 + 10.0)
    lim = make(clock)
    k = key(rpd=3)
    assert await admitted(lim, k, 4) == 3
    clock.advance(23 * 3600.0)
    err = await refusal(lim, k)
    assert "requests per day (rpd)" in err.message
    clock.now = T0 + 86_400 + 59.9  # the day window counts in minutes: gone at +24 h 1 min
    await refusal(lim, k)
    clock.now = T0 + 86_400 + 60.0
    assert await admitted(lim, k, 4) == 3


async def test_success_headers_report_the_tightest_window(make: Factory) -> None:
    clock = Clock(T0)
    lim = make(clock)
    k = key(rpm=100, rpd=5, tpm=1000)
    adm = await lim.admit(k, "m")
    h = {n.decode(): v.decode() for n, v in adm.headers}
    assert h["x-ratelimit-limit-requests"] == "5"
    assert h["x-ratelimit-remaining-requests"] == "4"
    assert h["x-ratelimit-reset-requests"] == "24h1m0s"
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-tokens"] == "1000"
    await lim.settle(k, adm, 300, None)
    clock.advance(10.0)
    h = {n.decode(): v.decode() for n, v in (await lim.admit(k, "m")).headers}
    assert h["x-ratelimit-remaining-tokens"] == "700"
    assert h["x-ratelimit-reset-tokens"] == "50.1s"


async def test_tokens_per_minute_refuse_once_used_up(make: Factory) -> None:
    clock = Clock(T0)
    lim = make(clock)
    k = key(tpm=100)
    first = await lim.admit(k, "m")
    second = await lim.admit(k, "m")  # admitted: nothing charged yet
    await lim.settle(k, first, 60, None)
    await lim.settle(k, second, 60, None)  # the window may overrun by what was in flight
    err = await refusal(lim, k)
    assert err.type == "tokens" and err.code == "rate_limit_exceeded"
    assert "tokens per minute (tpm): limit 100, used 120" in err.message
    clock.advance(60.1)
    await lim.admit(k, "m")


async def test_tokens_per_day(make: Factory) -> None:
    clock = Clock(T0)
    lim = make(clock)
    k = key(tpd=50)
    await lim.settle(k, await lim.admit(k, "m"), 50, None)
    clock.advance(3600.0)
    err = await refusal(lim, k)
    assert "tokens per day (tpd)" in err.message
    clock.advance(86_400.0)
    await lim.admit(k, "m")


async def test_token_quota_counts_history_and_never_resets(make: Factory) -> None:
    clock = Clock(T0)
    seed = CountingSeed(tokens=90)
    lim = make(clock, seed)
    k = key(7, token_quota=100)
    await lim.settle(k, await lim.admit(k, "m"), 15, None)
    err = await refusal(lim, k)
    assert err.status == 429
    assert err.type == "insufficient_quota" and err.code == "insufficient_quota"
    assert "105 of 100 tokens" in err.message
    assert err.headers["x-should-retry"] == "false"
    clock.advance(365 * 86_400.0)
    await refusal(lim, k)
    assert len(seed.calls) == 1
    assert (await lim.snapshot(7))["tokens"] == 105


async def test_raised_quota_admits_again(make: Factory) -> None:
    lim = make(Clock(T0), CountingSeed(tokens=100))
    await refusal(lim, key(token_quota=100))
    await lim.admit(key(token_quota=101), "m")  # an edited limit applies at once


async def test_daily_budget_resets_at_midnight_utc(make: Factory) -> None:
    clock = Clock(T0)  # 08:00 UTC
    seed = CountingSeed(cost=0.75)
    lim = make(clock, seed)
    k = key(3, budget_usd=1.0, budget_period="daily")
    adm = await lim.admit(k, "m")
    assert seed.calls == [(3, T0 - 8 * 3600)]  # spend counted from the start of the day
    await lim.settle(k, adm, 10, 0.30)
    err = await refusal(lim, k)
    assert err.type == "insufficient_quota"
    assert "daily budget: $1.0500 of $1.00 spent" in err.message
    assert "resets at 2027-01-16 00:00:00 UTC" in err.message
    assert err.headers["retry-after"] == str(16 * 3600)
    clock.now = T0 + 16 * 3600 - 0.001
    await refusal(lim, k)
    clock.now = T0 + 16 * 3600
    await lim.admit(k, "m")
    assert len(seed.calls) == 1  # a new period needs no database read
    assert (await lim.snapshot(3))["spent"] == 0.0


async def test_budget_without_period_never_resets(make: Factory) -> None:
    clock = Clock(T0)
    lim = make(clock, CountingSeed(cost=2.0))
    k = key(budget_usd=2.0)
    err = await refusal(lim, k)
    assert "does not reset" in err.message and "retry-after" not in err.headers
    clock.advance(400 * 86_400.0)
    await refusal(lim, k)


async def test_budget_period_change_reads_history_again(make: Factory) -> None:
    clock = Clock(T0)
    seed = CountingSeed(cost=0.5)
    lim = make(clock, seed)
    await lim.admit(key(budget_usd=1.0, budget_period="daily"), "m")
    await lim.admit(key(budget_usd=1.0, budget_period="monthly"), "m")
    assert [since for _, since in seed.calls] == [T0 - 8 * 3600, 1_798_761_600.0]  # 2027-01-01


async def test_unknown_cost_is_not_charged(make: Factory) -> None:
    lim = make(Clock(T0), CountingSeed())
    k = key(budget_usd=0.01)
    await lim.settle(k, await lim.admit(k, "m"), 10_000, None)
    await lim.admit(k, "m")
    assert (await lim.snapshot(1))["spent"] == 0.0


async def test_tiny_costs_add_up(make: Factory) -> None:
    lim = make(Clock(T0), CountingSeed())
    k = key(budget_usd=0.0001)
    for _ in range(3):
        await lim.settle(k, await lim.admit(k, "m"), 10, 0.00004)
    err = await refusal(lim, k)
    assert "$0.0001 of $0.00" in err.message
    assert (await lim.snapshot(1))["spent"] == pytest.approx(0.00012)


async def test_history_is_read_once_for_concurrent_first_requests(make: Factory) -> None:
    seed = CountingSeed()
    lim = make(Clock(T0), seed)
    k = key(token_quota=1000, budget_usd=5.0, budget_period="monthly")
    await asyncio.gather(*(lim.admit(k, "m") for _ in range(20)))
    assert len(seed.calls) == 1


async def test_concurrency_cap(make: Factory) -> None:
    lim = make(Clock(T0))
    k = key(5, max_parallel=2)
    one, two = await lim.admit(k, "m"), await lim.admit(k, "m")
    err = await refusal(lim, k)
    assert err.code == "concurrency_limit_exceeded" and err.headers["retry-after"] == "1"
    assert (await lim.snapshot(5))["in_flight"] == 2
    await lim.settle(k, one, None, None)
    three = await lim.admit(k, "m")
    await lim.settle(k, two, None, None)
    await lim.settle(k, three, 5, None)
    assert (await lim.snapshot(5))["in_flight"] == 0


async def test_all_limits_together_charge_only_when_admitted(make: Factory) -> None:
    clock = Clock(T0)
    lim = make(clock)
    k = key(rpm=5, max_parallel=1)
    held = await lim.admit(k, "m")
    for _ in range(3):
        await refusal(lim, k)  # refused by the cap: must not use up the rpm window
    await lim.settle(k, held, None, None)
    ok = 0
    for _ in range(10):
        try:
            await lim.settle(k, await lim.admit(k, "m"), None, None)
            ok += 1
        except GatewayError as exc:
            assert exc.code == "rate_limit_exceeded"
    assert ok == 4


async def test_in_process_state_per_key_stays_small() -> None:
    # A hundred thousand keys in use, every limit set: the windows were ~4 KB a key (a
    # deque each), 400 MB in all; flat lists hold the same in about a kilobyte.
    lim = LocalLimiter(clock=Clock(T0))
    limits = dict(rpm=10**9, rpd=10**9, tpm=10**9, tpd=10**9, token_quota=10**12)
    keys = [
        key(i, **limits, budget_usd=1e6, budget_period="monthly", max_parallel=100)
        for i in range(1, 2001)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for k in keys:
        await lim.settle(k, await lim.admit(k, "m"), 30, 0.001)
    gc.collect()
    per_key = (tracemalloc.get_traced_memory()[0] - before) / len(keys)
    tracemalloc.stop()
    assert per_key < 1500, per_key
    assert (await lim.snapshot(7))["tokens"] == 30
