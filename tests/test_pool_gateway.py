"""The pool through a running gateway: real fake upstreams switched at run time, the openai
SDK or httpx as client, the pool's clock under the test's control."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tollway.services.upstreams import upstream_status

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key
from .pool_rig import Rig, chats


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    made = {n: FakeUpstream(n, f"sk-upstream-SECRET-{n}").start() for n in ("a", "b", "c")}
    yield made
    for fake in made.values():
        fake.stop()


def entry(fake: FakeUpstream, models: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "name": fake.name,
        "base_url": fake.base_url,
        "api_key": fake.api_key,
        "models": models,
        **kw,
    }


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.stop()


def start(rigs: list[Rig], tmp: Path, config: dict[str, Any], **settings: Any) -> Rig:
    rig = Rig(tmp, config, **settings)
    rigs.append(rig)
    return rig


def test_traffic_follows_probed_vercel_balances(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    a.behaviour.balance, b.behaviour.balance, c.behaviour.balance = 10.0, 30.0, 0.0
    # Two keys of one account on a: its balance must count once.
    a.extra_keys.add("sk-upstream-SECRET-a2")
    (tmp_path / "key-list.json").write_text(
        json.dumps(
            {
                "keys": [
                    {"name": "k1", "mail": "team-a@example.com", "api_key": a.api_key},
                    {
                        "name": "k2",
                        "mail": "team-a@example.com",
                        "api_key": "sk-upstream-SECRET-a2",
                    },
                ]
            }
        )
    )
    config = {
        "upstreams": [
            {
                "name": "a",
                "base_url": a.base_url,
                "key_list": "key-list.json",
                "models": ["m"],
                "provider": "vercel",
            },
            entry(b, ["m"], provider="vercel"),
            entry(c, ["m"], provider="vercel"),
        ]
    }
    rig = start(rigs, tmp_path, config)
    for fake in fakes.values():
        fake.seen.clear()
    rig.call(rig.rt.upstreams.refresh_balances())  # type: ignore[union-attr]
    # One probe per account, not per key.
    assert sum(1 for s in a.seen if s.path == "/v1/credits") == 1
    pool = rig.rt.pool
    assert pool.by_name["a/k1"].acct is pool.by_name["a/k2"].acct
    assert pool.by_name["a/k1"].acct.available() == 10.0

    client = rig.client()
    n = 200
    for _ in range(n):
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content
    assert chats(c) == 0  # exhausted: nothing
    assert chats(a) + chats(b) == n
    assert chats(a) / n == pytest.approx(0.25, abs=0.05)
    keys_used = {s.headers["Authorization"] for s in a.seen if s.path == "/v1/chat/completions"}
    assert len(keys_used) == 2  # both keys of the account carry its share

    status = {s.name: s for s in rig.call(upstream_status(pool))}
    assert status["c"].health == "out_of_credit" and status["c"].balance_usd == 0.0
    assert status["b"].balance_source == "vercel" and status["b"].balance_checked_at is not None
    assert status["a/k1"].account == "team-a@example.com"
    assert status["b"].requests >= 1 and status["b"].latency_ms is not None
    assert status["b"].key_hint is not None and b.api_key not in status["b"].key_hint


def test_openrouter_key_probe(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    a.behaviour.balance = 74.5
    b.behaviour.balance = None  # a key without a limit: balance unknown
    config = {
        "upstreams": [
            entry(a, ["m"], provider="openrouter"),
            entry(b, ["m"], provider="openrouter"),
        ]
    }
    rig = start(rigs, tmp_path, config)
    rig.call(rig.rt.upstreams.refresh_balances())  # type: ignore[union-attr]
    pool = rig.rt.pool
    assert pool.by_name["a"].acct.available() == 74.5
    assert pool.by_name["b"].acct.available() is None
    assert any(s.path == "/v1/key" for s in a.seen)


def test_failover_keeps_errors_from_the_client(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    config = {
        "upstreams": [entry(f, ["m"]) for f in (a, b, c)],
        "routing": {"strategy": "round_robin"},
    }
    rig = start(rigs, tmp_path, config)
    client = rig.client()
    pool = rig.rt.pool

    def ask(times: int) -> None:
        for _ in range(times):
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
            assert reply.choices[0].message.content == "Hello from upstream"

    a.behaviour.mode = "error"  # 500
    b.behaviour.mode, b.behaviour.retry_after = "rate_limited", "30"
    ask(12)
    assert chats(a) == 1 and chats(b) == 1  # each failed once, then rested
    assert pool.health(pool.by_name["b"]) == "cooldown"
    assert pool.by_name["b"].cooldown_until - rig.clock.now == pytest.approx(30.0)
    # a answered 500 for "m": "m" rests on a, a itself does not (its other models go on).
    assert pool.health(pool.by_name["a"]) == "healthy"
    assert pool.model_states(pool.by_name["a"]) == {"m": "cooldown"}
    rest = pool.by_name["a"].model_health["m"].cooldown_until - rig.clock.now
    assert rest == pytest.approx(1.0)

    # Connection refused: c goes down too; a and b still rest, so they are the last resort.
    c.stop()
    a.behaviour.mode = "ok"
    ask(3)
    assert pool.health(pool.by_name["c"]) == "cooldown"

    # Recovery: time passes, a (healthy again) is tried half-open and comes back.
    a.seen.clear()
    rig.clock.advance(31.0)
    b.reset()
    ask(6)
    assert chats(a) >= 2 and chats(b) >= 2
    assert pool.health(pool.by_name["a"]) == "healthy"
    assert pool.model_states(pool.by_name["a"]) == {}
    assert pool.health(pool.by_name["b"]) == "healthy"
    rows = rig.usage_rows(21)
    assert all(r["status"] == 200 for r in rows)
    assert max(r["attempts"] for r in rows) >= 2


def test_one_failing_model_does_not_rest_the_upstreams_other_models(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    config = {
        "upstreams": [entry(a, ["good", "broken"]), entry(b, ["good", "broken"])],
        "routing": {"strategy": "round_robin"},
    }
    rig = start(rigs, tmp_path, config)
    a.scripted[b"broken"] = (500, {"error": {"message": "model down", "type": "server_error"}})
    for _ in range(6):
        assert rig.chat("broken").status_code == 200  # failed over to b, then b only
    broken_on_a = sum(1 for s in a.seen if b"broken" in s.body)
    assert broken_on_a == 1
    a.seen.clear()
    b.seen.clear()
    for _ in range(8):
        assert rig.chat("good").status_code == 200
    assert chats(a) == 4 and chats(b) == 4  # "good" still takes turns on a
    status = {s.name: s for s in rig.call(upstream_status(rig.rt.pool))}
    assert status["a"].health == "healthy"
    assert [(t.model, t.health, t.last_error) for t in status["a"].model_health] == [
        ("broken", "cooldown", "HTTP 500")
    ]


def test_out_of_credit_and_rejected_keys_leave_rotation(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    config = {
        "upstreams": [
            entry(a, ["m"]),
            entry(b, ["m"]),
            {**entry(c, ["m"]), "api_key": "sk-wrong-key"},
        ],
        "routing": {"strategy": "round_robin"},
    }
    rig = start(rigs, tmp_path, config)
    a.behaviour.mode = "no_credit"
    for _ in range(10):
        assert rig.chat("m").status_code == 200
    assert chats(a) == 1 and chats(c) == 1 and chats(b) == 10
    pool = rig.rt.pool
    assert pool.health(pool.by_name["a"]) == "out_of_credit"
    assert pool.health(pool.by_name["c"]) == "key_rejected"
    # Nothing left: a clear 503, no upstream text.
    b.behaviour.mode = "no_credit"
    resp = rig.chat("m")
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "upstream_out_of_credit"
    assert "quota" not in resp.text
    resp = rig.chat("m")
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_upstream_available"


def test_fallback_model_is_used_and_recorded(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    config = {
        "upstreams": [entry(a, ["big"]), entry(b, ["small"], aliases={"tiny": "small"})],
        "routing": {"fallbacks": {"big": ["tiny"]}},
    }
    rig = start(rigs, tmp_path, config)
    a.behaviour.mode = "error"
    reply = rig.client().chat.completions.create(
        model="big", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "Hello from upstream"
    sent = json.loads(b.seen[-1].body)
    assert sent["model"] == "small"  # the fallback's alias resolved for its upstream
    row = rig.usage_rows(1)[-1]
    assert (row["model"], row["fallback_from"], row["upstream"]) == ("tiny", "big", "b")
    assert row["upstream_model"] == "small" and row["attempts"] == 2

    # A key that may not use the fallback model gets the original failure.
    only_big = make_key(rig.db_url, models=["big"])
    rig.rt.pool.reset_health()
    resp = rig.chat("big", key=only_big)
    assert resp.status_code == 500 and chats(b) == 1

    # A model whose own upstreams are all out of rotation goes straight to its fallback.
    rig.rt.pool.on_key_rejected(rig.rt.pool.by_name["a"], 401)
    a.seen.clear()
    assert rig.chat("big").status_code == 200 and chats(a) == 0 and chats(b) == 2


def test_latency_strategy_end_to_end(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    config = {
        "upstreams": [entry(a, ["m"]), entry(b, ["m"])],
        "routing": {"groups": [{"models": ["m"], "strategy": "latency"}]},
    }
    rig = start(rigs, tmp_path, config)
    a.behaviour.delay = 0.15
    for _ in range(40):
        assert rig.chat("m").status_code == 200
    assert chats(b) >= 34  # the fast one, bar exploration and the first measurements


def test_rpm_cap_moves_traffic(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    config = {
        "upstreams": [entry(a, ["m"], rpm=3, weight=100), entry(b, ["m"], weight=1)],
        "routing": {"strategy": "weighted"},
    }
    rig = start(rigs, tmp_path, config)
    rig.clock.now = 60_000.0  # the start of a minute
    for _ in range(10):
        assert rig.chat("m").status_code == 200
    assert chats(a) == 3 and chats(b) == 7
    rig.clock.advance(120.0)
    assert rig.chat("m").status_code == 200 and chats(a) == 4


def test_models_list_follows_rotation_and_discovery(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    config = {
        "upstreams": [entry(a, ["m-a"]), {**entry(b, ["x"]), "models": None}],
        "routing": {"discover_models": True, "fallbacks": {"m-old": ["m-a"]}},
    }
    rig = start(rigs, tmp_path, config)
    rig.call(rig.rt.upstreams.discover_models())  # type: ignore[union-attr]
    ids = [m.id for m in rig.client().models.list()]
    assert ids == ["b-model", "m-a", "m-old"]
    rig.rt.pool.on_key_rejected(rig.rt.pool.by_name["a"], 401)
    assert [m.id for m in rig.client().models.list()] == ["b-model"]


def test_active_health_check_recovers_a_rested_upstream(
    fakes: dict[str, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes["a"], fakes["b"]
    rig = start(rigs, tmp_path, {"upstreams": [entry(a, ["m"]), entry(b, ["m"])]})
    pool = rig.rt.pool
    pool.on_failure(pool.by_name["a"], retry_after=300.0)
    rig.call(rig.rt.upstreams.check_health())  # type: ignore[union-attr]
    assert pool.health(pool.by_name["a"]) == "healthy"
    b.behaviour.mode = "error"  # its /v1/models fails: stays as it is
    pool.on_failure(pool.by_name["b"])
    rig.call(rig.rt.upstreams.check_health())  # type: ignore[union-attr]
    assert pool.health(pool.by_name["b"]) == "cooldown"
