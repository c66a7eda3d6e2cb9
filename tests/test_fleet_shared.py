"""Three Tollway instances on one PostgreSQL database and one Redis share the pool's health:
a key parked or an account out of credit on one instance is out of rotation on the others, a
manual balance is spent exactly once across all of them (and survives them), and balance
probes run on one instance only, another taking over when it stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tollway.core.settings import Settings
from tollway.store.db import migrate_sync
from tollway.upstreams.pool import Pool

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key, run_async
from .limits_support import drop_prefix, require_redis, unique_prefix
from .pool_rig import CHAT_PATH
from .servers import GatewayThread

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
PROBE_INTERVAL = 0.3
PRICE_PER_REQUEST = 0.14  # (11 prompt + 3 completion tokens) at 10,000 USD per 1M tokens


class Fleet:
    def __init__(self, tmp: Path, db_url: str) -> None:
        self.fakes = {n: FakeUpstream(n, f"sk-upstream-SECRET-{n}").start() for n in "abcdmv"}
        self.prefix = unique_prefix()
        self.db_url = db_url

        def entry(name: str, model: str, **kw: Any) -> dict[str, Any]:
            f = self.fakes[name]
            return {"name": name, "base_url": f.base_url, "api_key": f.api_key, "models": [model]}

        config = {
            "upstreams": [
                entry("a", "m1"),
                entry("b", "m1"),
                {**entry("c", "m2"), "account": "acme"},
                entry("d", "m2"),
                {**entry("m", "m3"), "manual_balance_usd": 10.0},
                {**entry("v", "m4"), "provider": "vercel", "account": "team"},
            ],
            "routing": {
                "strategy": "round_robin",
                "balance_refresh_interval": PROBE_INTERVAL,
                "health_check_interval": PROBE_INTERVAL,
            },
            "prices": {"m3": {"input": 10000, "output": 10000}},
        }
        path = tmp / "tollway.yaml"
        path.write_text(yaml.safe_dump(config))
        migrate_sync(db_url)
        self.settings = Settings(
            database_url=db_url,
            config=path,
            redis_url="redis://127.0.0.1:6379/0",
            redis_prefix=self.prefix,
            pool_lease_ttl=1.0,
            usage_flush_interval=0.05,
            upstream_read_timeout=5.0,
        )
        self.gateways = [GatewayThread(self.settings).start() for _ in range(3)]
        self.key = make_key(db_url)

    def pool(self, i: int) -> Pool:
        rt = self.gateways[i].app.runtime
        assert rt is not None
        return rt.pool

    def chat(self, i: int, model: str) -> httpx.Response:
        return httpx.post(
            self.gateways[i].url + CHAT_PATH,
            headers={"Authorization": f"Bearer {self.key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )

    def stop(self) -> None:
        for g in self.gateways:
            g.stop()
        for f in self.fakes.values():
            f.stop()
        drop_prefix(self.prefix)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg_url_module: str) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"), pg_url_module)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def pg_url_module() -> Iterator[str]:
    """A throwaway PostgreSQL database for the module (fixtures_gateway.pg_url_sync's way)."""
    import secrets

    from .fixtures_db import PG_HOST, PG_PORT, PG_USER, _admin_connection

    require_redis()
    name = f"tollway_t_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await _admin_connection()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_async(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_async(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def health(fleet: Fleet, i: int, name: str) -> str:
    pool = fleet.pool(i)
    return pool.health(pool.by_name[name])


def holds_lease(g: GatewayThread) -> bool:
    rt = g.app.runtime
    assert rt is not None and rt.upstreams is not None and rt.upstreams.shared is not None
    return rt.upstreams.shared.lease.held


def chats(fake: FakeUpstream) -> int:
    return sum(1 for s in fake.seen if s.path == CHAT_PATH)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `check` held (fails after `timeout`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "the other instances never learned it"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_key_parked_on_one_instance_leaves_rotation_on_all(fleet: Fleet) -> None:
    a, b = fleet.fakes["a"], fleet.fakes["b"]
    a.behaviour.mode = "reject_key"  # a genuine 401: the key was revoked
    assert fleet.chat(0, "m1").status_code == 200  # a refuses; failover to b
    assert chats(a) == 1
    assert fleet.pool(0).health(fleet.pool(0).by_name["a"]) == "key_rejected"
    took = wait_for(lambda: all(health(fleet, i, "a") == "key_rejected" for i in (1, 2)), 1.0)
    print(f"\nparked key known fleet-wide after {took * 1000:.0f} ms")
    before_b = chats(b)
    for i in (1, 2):
        for _ in range(5):
            assert fleet.chat(i, "m1").status_code == 200
    assert chats(a) == 1  # instances 2 and 3 never tried the rejected key
    assert chats(b) == before_b + 10


def test_an_account_out_of_credit_on_one_instance_leaves_rotation_on_all(fleet: Fleet) -> None:
    c, d = fleet.fakes["c"], fleet.fakes["d"]
    c.behaviour.mode = "no_credit"
    assert fleet.chat(1, "m2").status_code == 200  # c is out of credit; d answers
    assert chats(c) == 1
    took = wait_for(lambda: all(health(fleet, i, "c") == "out_of_credit" for i in (0, 2)), 1.0)
    print(f"\nexhausted account known fleet-wide after {took * 1000:.0f} ms")
    before_d = chats(d)
    for i in (0, 2):
        for _ in range(4):
            assert fleet.chat(i, "m2").status_code == 200
    assert chats(c) == 1 and chats(d) == before_d + 8


def remaining(fleet: Fleet, i: int) -> float | None:
    return fleet.pool(i).accounts["upstream:m"].available()


def test_manual_balance_is_exact_across_instances(fleet: Fleet) -> None:
    sent = {0: 4, 1: 3, 2: 1}
    for i, n in sent.items():
        for _ in range(n):
            assert fleet.chat(i, "m3").status_code == 200
    expected = round(10.0 - 8 * PRICE_PER_REQUEST, 6)
    wait_for(lambda: all(round(remaining(fleet, i) or 0.0, 6) == expected for i in range(3)))
    seen = [round(remaining(fleet, i) or 0.0, 6) for i in range(3)]
    print(f"\nmanual balance left on each instance: {seen}")


def test_balance_probes_and_health_checks_run_on_one_instance_only(fleet: Fleet) -> None:
    v, a = fleet.fakes["v"], fleet.fakes["a"]  # a's key was parked by the first test
    holders = [g for g in fleet.gateways if holds_lease(g)]
    assert len(holders) == 1
    v.behaviour.balance = 42.0
    v.seen.clear()
    a.seen.clear()
    time.sleep(10 * PROBE_INTERVAL)
    probes = sum(1 for s in v.seen if s.path == "/v1/credits")
    checks = sum(1 for s in a.seen if s.path == "/v1/models")
    print(
        f"\nin {10 * PROBE_INTERVAL:.1f} s, 3 instances: {probes} balance probes, "
        f"{checks} health checks of the parked key"
    )
    assert 1 <= probes <= 12  # one prober: ~10; one per instance would be ~30
    assert 1 <= checks <= 12
    wait_for(lambda: all(fleet.pool(i).accounts["team"].balance_usd == 42.0 for i in range(3)))
    # The holder stops: another instance takes the lease over and probes.
    fleet.gateways.remove(holders[0])
    holders[0].stop()
    v.behaviour.balance = 7.0
    wait_for(lambda: all(fleet.pool(i).accounts["team"].balance_usd == 7.0 for i in range(2)))
    assert sum(1 for g in fleet.gateways if holds_lease(g)) == 1


def test_manual_spend_survives_the_fleet_and_redis(fleet: Fleet, tmp_path: Path) -> None:
    """Every instance stores the totals when it stops; a new instance on an empty Redis
    (another prefix: as if Redis had lost everything) starts from them."""
    expected = round(10.0 - 8 * PRICE_PER_REQUEST, 6)
    for g in fleet.gateways:
        g.stop()
    fleet.gateways.clear()
    prefix = unique_prefix()
    g = GatewayThread(fleet.settings.model_copy(update={"redis_prefix": prefix})).start()
    try:
        rt = g.app.runtime
        assert rt is not None
        assert round(rt.pool.accounts["upstream:m"].available() or 0.0, 6) == expected
    finally:
        g.stop()
        drop_prefix(prefix)


async def test_cooldowns_and_recoveries_travel_between_pools() -> None:
    from tollway.gateway.limiting import connect
    from tollway.upstreams.shared_state import SharedPoolState
    from tollway.upstreams.target import Upstream

    from .limits_support import REDIS_URL

    require_redis()
    prefix = unique_prefix()
    pools = [Pool([Upstream("x", "http://127.0.0.1:9/v1", api_key="k")]) for _ in range(2)]
    shared = [SharedPoolState(connect(REDIS_URL), prefix, p) for p in pools]
    try:
        for s in shared:
            await s.start()
        one, two = pools
        one.on_failure(one.by_name["x"], retry_after=30.0)
        await shared[0].flush()
        deadline = time.monotonic() + 5
        while two.health(two.by_name["x"]) != "cooldown":
            assert time.monotonic() < deadline, "the cooldown never arrived"
            await asyncio.sleep(0.02)
        assert two.by_name["x"].cooldown_until - two.clock() > 25
        one.on_success(one.by_name["x"], 5.0)  # recovered: the others stop resting it
        await shared[0].flush()
        while two.health(two.by_name["x"]) != "healthy":
            assert time.monotonic() < deadline, "the recovery never arrived"
            await asyncio.sleep(0.02)
    finally:
        for s in shared:
            await s.stop()
        drop_prefix(prefix)
