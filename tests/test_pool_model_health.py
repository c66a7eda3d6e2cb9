"""Health per upstream *and model*: a 5xx answer for one model rests that model on that
upstream only; connection failures, timeouts and 429s still rest the whole upstream. Driven
directly with a controllable clock (test_pool_gateway.py has the end-to-end version)."""

from __future__ import annotations

import asyncio
import random
import time

from tollway.upstreams.policy import PoolPolicy
from tollway.upstreams.pool import MAX_MODEL_HEALTH, Pool
from tollway.upstreams.target import Upstream

from .test_pool_strategies import Clock


def up(name: str) -> Upstream:
    return Upstream(name=name, base_url=f"http://127.0.0.1:1/{name}/v1", api_key=f"k-{name}")


def pool_of(*ups: Upstream, clock: Clock) -> Pool:
    policy = PoolPolicy(default_strategy="round_robin")
    return Pool(list(ups), policy, clock=clock, rng=random.Random(3))


def names(pool: Pool, model: str) -> list[str]:
    return [u.name for u in pool.candidates(model)]


def test_a_failing_model_rests_alone_and_its_siblings_keep_their_order() -> None:
    clock = Clock()
    a, b = up("a"), up("b")
    pool = pool_of(a, b, clock=clock)
    pool.on_model_failure(a, "broken", "HTTP 500")
    # "broken" tries b first and a only as a last resort...
    assert names(pool, "broken") == ["b", "a"]
    # ...while every other model still takes turns on both.
    assert {names(pool, "fine")[0] for _ in range(4)} == {"a", "b"}
    assert pool.health(a) == "healthy"
    assert pool.model_states(a) == {"broken": "cooldown"}
    assert a.last_error == "broken: HTTP 500" and a.failures == 1


def test_model_backoff_half_open_trial_and_recovery() -> None:
    clock = Clock()
    a, b = up("a"), up("b")
    pool = pool_of(a, b, clock=clock)
    pool.on_model_failure(a, "m", "HTTP 502")
    clock.advance(1.01)  # the base cooldown is over: half open for "m"
    assert pool.model_states(a) == {"m": "half_open"}
    assert "a" in names(pool, "m")  # one trial handed out...
    assert names(pool, "m") == ["b"]  # ...and no second while it is out
    pool.on_model_failure(a, "m", "HTTP 502")  # the trial failed: 2 s now
    clock.advance(1.5)
    assert names(pool, "m") == ["b", "a"] and pool.model_states(a) == {"m": "cooldown"}
    clock.advance(0.6)
    pool.on_success(a, 12.0, "m")
    assert pool.model_states(a) == {}
    assert {names(pool, "m")[0] for _ in range(4)} == {"a", "b"}


def test_a_success_for_another_model_does_not_clear_a_models_trouble() -> None:
    clock = Clock()
    a = up("a")
    pool = pool_of(a, clock=clock)
    pool.on_model_failure(a, "m", "HTTP 500")
    pool.on_success(a, 5.0, "other")
    pool.on_success(a, 5.0)  # a health check's GET /models says nothing about "m"
    assert pool.model_states(a) == {"m": "cooldown"}


def test_connection_failures_still_rest_the_whole_upstream() -> None:
    clock = Clock()
    a, b = up("a"), up("b")
    pool = pool_of(a, b, clock=clock)
    pool.on_failure(a, reason="connection failed")
    assert pool.health(a) == "cooldown"
    assert names(pool, "x") == ["b", "a"] and names(pool, "y") == ["b", "a"]
    # A 5xx without a model (files, batches) has nothing narrower to rest.
    pool.on_model_failure(b, None, "HTTP 500")
    assert pool.health(b) == "cooldown"


def test_model_health_survives_a_reload_and_is_bounded() -> None:
    clock = Clock()
    a = up("a")
    pool = pool_of(a, clock=clock)
    pool.on_model_failure(a, "m", "HTTP 500")
    changed = up("a")
    changed.weight = 2.0
    pool.replace([changed])
    assert pool.model_states(pool.by_name["a"]) == {"m": "cooldown"}
    # Clients choose model names: past the bound, the whole upstream rests instead.
    fresh = up("f")
    pool.replace([fresh])
    for i in range(MAX_MODEL_HEALTH):
        pool.on_model_failure(fresh, f"m{i}", "HTTP 500")
    assert len(fresh.model_health) == MAX_MODEL_HEALTH and pool.health(fresh) == "healthy"
    pool.on_model_failure(fresh, "one-more", "HTTP 500")
    assert "one-more" not in fresh.model_health and pool.health(fresh) == "cooldown"


async def test_model_trouble_and_recovery_travel_between_pools() -> None:
    from tollway.gateway.limiting import connect
    from tollway.upstreams.shared_state import SharedPoolState

    from .limits_support import REDIS_URL, drop_prefix, require_redis, unique_prefix

    require_redis()
    prefix = unique_prefix()
    pools = [Pool([up("x")]) for _ in range(2)]
    shared = [SharedPoolState(connect(REDIS_URL), prefix, p) for p in pools]
    try:
        for s in shared:
            await s.start()
        one, two = pools
        one.on_model_failure(one.by_name["x"], "m", "HTTP 500")
        await shared[0].flush()
        x = two.by_name["x"]
        deadline = time.monotonic() + 5
        while two.model_states(x) != {"m": "cooldown"}:
            assert time.monotonic() < deadline, "the model's cooldown never arrived"
            await asyncio.sleep(0.02)
        assert two.health(x) == "healthy"  # only the model rests there too
        one.on_success(one.by_name["x"], 5.0, "m")
        await shared[0].flush()
        while two.model_states(x):
            assert time.monotonic() < deadline, "the model's recovery never arrived"
            await asyncio.sleep(0.02)
    finally:
        for s in shared:
            await s.stop()
        drop_prefix(prefix)
