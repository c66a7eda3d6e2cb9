"""A Test and the pool's health agree: an upstream at a closed port that fails its Test is
not "healthy"; a passing Test clears "half open" (a model's too); a 400 for a misspelt model
says nothing about health. Real HTTP: a fake upstream and a port nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tollway.services.upstream_tests import test_in_pool
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

from .fake_upstream import FakeUpstream
from .test_pool_strategies import Clock


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    f = FakeUpstream("t", "sk-upstream-SECRET-t").start()
    yield f
    f.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failed_test_marks_the_upstream() -> None:
    up = Upstream("down", f"http://127.0.0.1:{closed_port()}/v1", api_key="k")
    pool = Pool([up], clock=Clock())
    assert pool.health(up) == "healthy"  # nothing known yet
    result = await test_in_pool(pool, up)
    assert not result.ok and result.status is None
    assert pool.health(up) == "cooldown"
    assert up.last_error is not None and up.last_error.startswith("test: unreachable")


async def test_a_passing_test_clears_half_open(fake: FakeUpstream) -> None:
    clock = Clock()
    up = Upstream("t", fake.base_url, api_key=fake.api_key, models=frozenset({"m"}))
    pool = Pool([up], clock=clock)
    pool.on_failure(up, reason="timeout")
    clock.advance(5.0)
    assert pool.health(up) == "half_open"
    assert (await test_in_pool(pool, up)).ok
    assert pool.health(up) == "healthy"
    # A model resting after 500s is cleared by a Test of that model, not by GET /models.
    pool.on_model_failure(up, "m", "HTTP 500")
    assert (await test_in_pool(pool, up)).ok
    assert pool.model_states(up) == {"m": "cooldown"}
    assert (await test_in_pool(pool, up, "m")).ok
    assert pool.model_states(up) == {}


async def test_a_5xx_test_of_a_model_rests_that_model_and_a_400_changes_nothing(
    fake: FakeUpstream,
) -> None:
    up = Upstream("t", fake.base_url, api_key=fake.api_key)
    pool = Pool([up], clock=Clock())
    fake.scripted[b"gone-model"] = (503, {"error": {"message": "no", "type": "server_error"}})
    fake.scripted[b"typo-model"] = (400, {"error": {"message": "no such model"}})
    assert not (await test_in_pool(pool, up, "gone-model")).ok
    assert pool.health(up) == "healthy" and pool.model_states(up) == {"gone-model": "cooldown"}
    assert not (await test_in_pool(pool, up, "typo-model")).ok
    assert pool.model_states(up) == {"gone-model": "cooldown"} and up.failures == 1
    fake.api_key = "sk-rotated-elsewhere"  # our key no longer works there
    result = await test_in_pool(pool, up)
    assert result.status == 401 and pool.health(up) == "key_rejected"


def test_the_admin_api_test_and_the_status_agree(tmp_path: Any) -> None:
    from .fixtures_gateway import Stack

    secret = "health-admin-secret-0123456789"
    stack = Stack(tmp_path, admin_secret=secret, secret_key="health-server-secret-0123456789")
    try:
        with httpx.Client(
            base_url=stack.url + "/admin/api", headers={"Authorization": f"Bearer {secret}"}
        ) as api:
            spec = {"name": "gone", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}
            made = api.post("/upstreams", json=spec)
            assert made.status_code == 201
            status = {s["name"]: s for s in api.get("/upstreams/status").json()}
            assert status["gone"]["health"] == "healthy"  # in the pool at once, nothing known
            result = api.post(f"/upstreams/{made.json()['id']}/test").json()
            assert result["ok"] is False and result["status"] is None
            status = {s["name"]: s for s in api.get("/upstreams/status").json()}
            assert status["gone"]["health"] == "cooldown"
            assert status["gone"]["source"] == "database" and status["a"]["source"] == "config"
    finally:
        stack.stop()
