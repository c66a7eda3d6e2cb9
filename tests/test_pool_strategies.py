"""The pool's choices, driven directly: many picks, a controllable clock, no sleeping.

End-to-end versions through a running gateway live in test_pool_gateway.py."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tollway.upstreams.policy import PoolPolicy
from tollway.upstreams.pool import Pool
from tollway.upstreams.strategies import balance_weights
from tollway.upstreams.target import Upstream


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def up(name: str, **kw: object) -> Upstream:
    return Upstream(name=name, base_url=f"http://127.0.0.1:1/{name}/v1", api_key=f"k-{name}", **kw)  # type: ignore[arg-type]


def make_pool(ups: list[Upstream], clock: Clock | None = None, **policy: object) -> Pool:
    return Pool(ups, PoolPolicy(**policy), clock=clock or Clock(), rng=random.Random(7))  # type: ignore[arg-type]


def picks(pool: Pool, n: int, model: str | None = "m") -> Counter[str]:
    return Counter(pool.candidates(model)[0].name for _ in range(n))


def test_traffic_follows_balance_over_many_requests() -> None:
    ups = [up("a"), up("b"), up("c")]
    pool = make_pool(ups)
    for u, balance in zip(ups, (10.0, 20.0, 70.0), strict=True):
        pool.set_balance(u.acct, balance, 0.0)
    n = 3000
    counts = picks(pool, n)
    for name, share in (("a", 0.1), ("b", 0.2), ("c", 0.7)):
        assert counts[name] / n == pytest.approx(share, abs=0.02), counts
    # Twice the balance gets twice the traffic.
    assert counts["b"] / counts["a"] == pytest.approx(2.0, rel=0.1)


def test_keys_of_one_account_share_its_balance() -> None:
    # Account x has $100 and two keys; account y has $100 and one key: x and y get half each.
    ups = [
        up("x1", account="x@example.com"),
        up("x2", account="x@example.com"),
        up("y", account="y"),
    ]
    pool = make_pool(ups)
    pool.set_balance(pool.accounts["x@example.com"], 100.0, 0.0)
    pool.set_balance(pool.accounts["y"], 100.0, 0.0)
    assert ups[0].acct is ups[1].acct
    n = 2000
    counts = picks(pool, n)
    assert (counts["x1"] + counts["x2"]) / n == pytest.approx(0.5, abs=0.02)
    assert counts["x1"] / n == pytest.approx(0.25, abs=0.02)
    assert counts["y"] / n == pytest.approx(0.5, abs=0.02)


def test_exhausted_balance_gets_nothing_not_even_as_last_resort() -> None:
    ups = [up("rich"), up("broke")]
    pool = make_pool(ups, min_balance_usd=0.0)
    pool.set_balance(ups[0].acct, 5.0, 0.0)
    pool.set_balance(ups[1].acct, 0.0, 0.0)
    for _ in range(500):
        assert [u.name for u in pool.candidates("m")] == ["rich"]
    pool.set_balance(ups[0].acct, 0.0, 0.0)
    assert pool.candidates("m") == []
    assert pool.health(ups[1]) == "out_of_credit"


def test_unknown_balance_counts_as_the_mean_of_known_ones() -> None:
    ups = [up("a"), up("b"), up("unknown")]
    pool = make_pool(ups)
    pool.set_balance(ups[0].acct, 10.0, 0.0)
    pool.set_balance(ups[1].acct, 30.0, 0.0)
    counts = picks(pool, 1500)
    # weights 10 : 30 : 20
    assert counts["unknown"] / 1500 == pytest.approx(20 / 60, abs=0.02)


def test_own_account_weights_equal_the_general_count_bit_for_bit() -> None:
    """The shortcut for groups where every upstream has its own account gives exactly the
    weights of the general per-account count, known, unknown and no balances alike."""
    ups = [up(f"u{i}", weight=1.0 + i % 3) for i in range(7)]
    pool = make_pool(ups)
    assert len(pool.serving("m")) == 7 and pool._group("m").own_accounts
    assert (
        balance_weights(ups, own_accounts=True) == balance_weights(ups) == [u.weight for u in ups]
    )
    for i in (0, 2, 3, 6):
        pool.set_balance(ups[i].acct, 0.1 * (i + 1) + 7.3, 0.0)
    assert balance_weights(ups, own_accounts=True) == balance_weights(ups)
    shared = [up("s1", account="same"), up("s2", account="same")]
    assert not make_pool([*ups, *shared])._group("m").own_accounts


def test_balance_without_any_known_balance_follows_the_static_weights() -> None:
    # No probe answered yet: the balance strategy splits by weight, and a balance that
    # becomes known for one account switches it to weight x balance at once.
    a, b = up("a", weight=3.0), up("b", weight=1.0, account="shared")
    c = up("c", weight=1.0, account="shared")
    pool = make_pool([a, b, c])
    assert picks(pool, 500) == Counter({"a": 300, "b": 100, "c": 100})
    pool.set_balance(a.acct, 1.0, 0.0)  # b's and c's account: the mean, 1.0, shared by two
    counts = picks(pool, 800)
    assert counts == Counter({"a": 600, "b": 100, "c": 100})


def test_bursts_spread_when_weights_are_close() -> None:
    ups = [up("a"), up("b"), up("c")]
    pool = make_pool(ups)
    for u, balance in zip(ups, (33.0, 34.0, 33.0), strict=True):
        pool.set_balance(u.acct, balance, 0.0)
    seq = [pool.candidates("m")[0].name for _ in range(300)]
    longest = max(len(run) for run in _runs(seq))
    assert longest <= 2, seq[:30]


def _runs(seq: list[str]) -> list[list[str]]:
    runs: list[list[str]] = [[seq[0]]]
    for x in seq[1:]:
        if x == runs[-1][-1]:
            runs[-1].append(x)
        else:
            runs.append([x])
    return runs


def test_static_weights_and_round_robin_per_model_group() -> None:
    a = up("a", weight=3.0, models=frozenset({"m", "rr-model"}))
    b = up("b", weight=1.0, models=frozenset({"m", "rr-model"}))
    pool = make_pool([a, b], default_strategy="weighted", groups=[(("rr-*",), "round_robin")])
    counts = picks(pool, 400)
    assert counts == Counter({"a": 300, "b": 100})
    seq = [pool.candidates("rr-model")[0].name for _ in range(6)]
    assert seq in (["a", "b"] * 3, ["b", "a"] * 3)
    # The order is also the failover order: everyone is in it.
    assert {u.name for u in pool.candidates("rr-model")} == {"a", "b"}


def test_least_busy_picks_the_upstream_with_fewest_in_flight() -> None:
    ups = [up("a"), up("b"), up("c")]
    pool = make_pool(ups, default_strategy="least_busy")
    ups[0].in_flight, ups[1].in_flight, ups[2].in_flight = 5, 1, 3
    assert [pool.candidates("m")[0].name for _ in range(20)] == ["b"] * 20
    ups[1].in_flight = 9
    assert pool.candidates("m")[0].name == "c"
    # Equal load: they take turns.
    for u in ups:
        u.in_flight = 0
    assert set(picks(pool, 30)) == {"a", "b", "c"}


def test_latency_strategy_prefers_the_fastest_and_keeps_measuring() -> None:
    ups = [up("slow"), up("fast"), up("new")]
    pool = make_pool(ups, default_strategy="latency", latency_explore=0.05)
    pool.on_success(ups[0], 900.0)
    pool.on_success(ups[1], 40.0)
    # Never measured: tried first, to learn its latency.
    assert pool.candidates("m")[0].name == "new"
    pool.on_success(ups[2], 400.0)
    counts = picks(pool, 2000)
    assert counts["fast"] / 2000 > 0.9
    assert counts["slow"] > 0 and counts["new"] > 0  # exploration
    # The moving average follows: the fast one slows down, the other takes over.
    for _ in range(20):
        pool.on_success(ups[1], 2000.0)
    assert picks(pool, 200).most_common(1)[0][0] == "new"


def test_cooldown_backoff_and_half_open_recovery() -> None:
    clock = Clock()
    a, b = up("a"), up("b")
    pool = make_pool([a, b], clock=clock, default_strategy="round_robin")
    pool.on_failure(a)
    # Cooling down: last resort only.
    assert [u.name for u in pool.candidates("m")] == ["b", "a"]
    assert pool.health(a) == "cooldown"
    clock.advance(1.01)  # base cooldown 1 s
    assert pool.health(a) == "half_open"
    a.in_flight = 1  # the trial request is under way: no second one
    assert [u.name for u in pool.candidates("m")] == ["b"]
    a.in_flight = 0
    pool.on_failure(a)  # the trial failed: 2 s now
    clock.advance(1.5)
    assert pool.candidates("m")[-1] is a and pool.health(a) == "cooldown"
    clock.advance(0.6)
    pool.on_success(a, 10.0)
    assert pool.health(a) == "healthy"
    assert {pool.candidates("m")[0].name for _ in range(4)} == {"a", "b"}


def test_backoff_is_capped_and_retry_after_honoured() -> None:
    clock = Clock()
    a = up("a")
    pool = make_pool([a], clock=clock, cooldown_max=60.0, retry_after_max=600.0)
    for _ in range(40):
        pool.on_failure(a)
    assert a.cooldown_until - clock.now == pytest.approx(60.0)
    pool.on_success(a, 1.0)
    pool.on_failure(a, retry_after=120.0)
    clock.advance(119.0)
    assert pool.health(a) == "cooldown"
    clock.advance(1.5)
    assert pool.health(a) == "half_open"
    pool.on_failure(a, retry_after=10_000.0)  # capped
    assert a.cooldown_until - clock.now == pytest.approx(600.0)


def test_rejected_key_leaves_rotation_then_gets_a_trial() -> None:
    clock = Clock()
    a, b = up("a"), up("b")
    pool = make_pool([a, b], clock=clock, key_park=300.0)
    pool.on_key_rejected(a, 401)
    for _ in range(50):
        assert [u.name for u in pool.candidates("m")] == ["b"]
    assert pool.health(a) == "key_rejected"
    clock.advance(301.0)
    assert a in pool.candidates("m")
    pool.on_key_rejected(a, 401)  # still bad: rests twice as long
    assert a.parked_until - clock.now == pytest.approx(600.0)


def test_out_of_credit_answer_takes_the_whole_account_out_until_topped_up() -> None:
    clock = Clock()
    k1, k2 = up("k1", account="team"), up("k2", account="team")
    other = up("other")
    pool = make_pool([k1, k2, other], clock=clock)
    pool.set_balance(k1.acct, 3.0, 0.0)
    pool.on_exhausted(k1, 402)
    assert [u.name for u in pool.candidates("m")] == ["other"]
    pool.set_balance(k1.acct, 3.0, 0.0)  # same balance as before: still out
    assert [u.name for u in pool.candidates("m")] == ["other"]
    pool.set_balance(k1.acct, 50.0, 0.0)  # topped up
    assert {u.name for u in pool.candidates("m")} == {"k1", "k2", "other"}


def test_rpm_and_tpm_caps_per_upstream() -> None:
    clock = Clock(now=6000.0)  # start of a minute
    a, b = up("a", rpm=3), up("b", tpm=100)
    pool = make_pool([a, b], clock=clock, default_strategy="round_robin")
    for _ in range(3):
        pool.on_attempt(a)
    assert [u.name for u in pool.candidates("m")] == ["b"]
    assert pool.health(a) == "rate_capped"
    pool.on_usage("b", 100, None)
    assert pool.candidates("m") == []
    clock.advance(30.0)  # same minute: still capped
    assert pool.candidates("m") == []
    clock.advance(31.0)  # the last minute now weighs 59/60: a is at 2.95 of 3, b at 98.3
    assert {u.name for u in pool.candidates("m")} == {"a", "b"}
    for _ in range(3):
        pool.on_attempt(a)
    assert [u.name for u in pool.candidates("m")] == ["b"]


def test_manual_balance_is_spent_by_recorded_cost() -> None:
    a = up("a", manual_balance_usd=1.0)
    b = up("b")
    pool = make_pool([a, b])
    assert a.acct.probe == "manual" and a.acct.available() == 1.0
    pool.on_usage("a", 50, 0.4)
    pool.on_usage("a", 50, 0.6)
    assert a.acct.available() == pytest.approx(0.0)
    assert [u.name for u in pool.candidates("m")] == ["b"]
    # Reloading the same configuration keeps what was spent; a new balance starts afresh.
    pool.replace([up("a", manual_balance_usd=1.0), up("b")])
    assert pool.by_name["a"].acct.available() == pytest.approx(0.0)
    pool.replace([up("a", manual_balance_usd=5.0), up("b")])
    assert pool.by_name["a"].acct.available() == pytest.approx(5.0)


def test_replace_keeps_live_state_and_balances() -> None:
    clock = Clock()
    a = up("a", account="acct")
    pool = make_pool([a], clock=clock)
    pool.set_balance(a.acct, 42.0, 0.0)
    pool.on_failure(a)
    a.in_flight = 2
    # Unchanged: the very same object stays, so requests in flight settle on it.
    pool.replace([up("a", account="acct")])
    assert pool.by_name["a"] is a and a.in_flight == 2
    assert a.acct.available() == 42.0
    # Changed (new weight): health and balance carry over; in-flight stays with the old one.
    changed = up("a", account="acct", weight=2.0)
    pool.replace([changed])
    assert pool.by_name["a"] is changed and changed.in_flight == 0
    assert changed.cooldown_until == a.cooldown_until and changed.acct.available() == 42.0


def test_models_listing_and_fallbacks() -> None:
    a = up("a", models=frozenset({"big"}), aliases={"big-alias": "big"})
    b = up("b", models=frozenset({"small"}))
    pool = make_pool([a, b], fallbacks={"big": ("small",), "ghost": ("small",)})
    assert pool.models() == ["big", "big-alias", "ghost", "small"]
    assert pool.knows("ghost") and pool.fallbacks("big") == ("small",)
    assert pool.fallbacks(None) == ()
    pool.on_key_rejected(a, 401)
    assert "big-alias" not in pool.models()


def test_unknown_model_names_do_not_grow_the_cache_forever() -> None:
    pool = make_pool([up("a", models=frozenset({"m"}))])
    for i in range(10_000):
        assert not pool.knows(f"nope-{i}")
    assert len(pool._groups) <= 4097
