"""Limits end to end: a real Tollway (in-process limits, then Redis-shared limits), real fake
upstreams, the official openai SDK and raw httpx."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tollway.core.secrets import hash_key
from tollway.services import keys as key_service
from tollway.services import prices as price_service
from tollway.store import queries
from tollway.store.db import create_engine

from .fixtures_gateway import Stack, make_key, run_async
from .limits_support import REDIS_URL, drop_prefix, require_redis, unique_prefix
from .servers import GatewayThread

PRICES = {"gpt-test": {"input": 1000.0, "output": 2000.0, "cached_input": 500.0}}
# The fake upstream's answers: non-streamed 11 prompt (3 cached) + 3 completion tokens;
# streamed 11 prompt + 5 completion tokens.
JSON_TOKENS, JSON_COST = 14, (8 * 1000 + 3 * 500 + 3 * 2000) / 1e6
STREAM_TOKENS, STREAM_COST = 16, (11 * 1000 + 5 * 2000) / 1e6
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(
    scope="module", params=[pytest.param("local"), pytest.param("redis", marks=pytest.mark.redis)]
)
def lstack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    extra: dict[str, Any] = {}
    if request.param == "redis":
        require_redis()
        extra = {"redis_url": REDIS_URL, "redis_prefix": unique_prefix()}
    s = Stack(tmp_path_factory.mktemp("limits"), config_extra={"prices": PRICES}, **extra)
    yield s
    s.stop()
    if extra:
        drop_prefix(extra["redis_prefix"])


@pytest.fixture
def st(lstack: Stack) -> Stack:
    lstack.reset()
    return lstack


def new_key(stack: Stack, **limits: Any) -> tuple[str, int]:
    secret = make_key(stack.db_url, **limits)

    async def find() -> int:
        engine = create_engine(stack.db_url)
        try:
            record = await queries.load_key_by_hash(engine, hash_key(secret))
            assert record is not None
            return record.id
        finally:
            await engine.dispose()

    key_id: int = run_async(find())
    return secret, key_id


def snapshot(stack: Stack, key_id: int, gateway: GatewayThread | None = None) -> dict[str, float]:
    gw = gateway or stack.gateway
    rt = gw.app.runtime
    assert rt is not None
    result: dict[str, float] = gw.call(rt.limiter.snapshot(key_id))  # type: ignore[attr-defined]
    return result


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def chat(stack: Stack, key: str, stream: bool = False, model: str = "gpt-test") -> str:
    """One completion; returns its request id (for its usage row)."""
    client = stack.client(key)
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=MSG, stream=True
        )
        for _ in raw.parse():
            pass
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MSG)
    return raw.headers["x-request-id"]


# --- exactness --------------------------------------------------------------------------------


def test_exactly_rpm_successes_of_100_concurrent_requests(st: Stack) -> None:
    key, _ = new_key(st, rpm=10)

    async def burst() -> list[Any]:
        client = st.aclient(key)
        calls = [client.chat.completions.create(model="gpt-test", messages=MSG) for _ in range(100)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run_async(burst())
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 90 and len(results) - len(refused) == 10
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    assert len(st.a.seen) == 10  # refused requests never reach an upstream


def test_rate_limit_headers_and_refusal_format(st: Stack) -> None:
    key, _ = new_key(st, rpm=2, tpm=1000)
    raw = st.client(key).chat.completions.with_raw_response.create(model="gpt-test", messages=MSG)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "1000"
    chat(st, key)
    r = httpx.post(
        st.url + "/v1/chat/completions",
        json={"model": "gpt-test", "messages": MSG},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 429
    assert 59 <= int(r.headers["retry-after"]) <= 61
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
    assert "requests per minute (rpm): limit 2, used 2" in err["message"]
    assert "try again in" in err["message"]
    with pytest.raises(openai.RateLimitError):
        st.client(key).chat.completions.create(model="gpt-test", messages=MSG)


# --- tokens, cost, budget ---------------------------------------------------------------------


def test_tokens_per_minute_with_json_and_stream(st: Stack) -> None:
    key, _ = new_key(st, tpm=20)
    chat(st, key)  # 14 tokens
    chat(st, key, stream=True)  # admitted (14 < 20), then 16 more
    with pytest.raises(openai.RateLimitError) as err:
        chat(st, key)
    assert err.value.code == "rate_limit_exceeded"
    assert "tokens per minute (tpm): limit 20, used 30" in err.value.message
    assert len(st.a.seen) == 2


def test_cost_from_the_price_table(st: Stack) -> None:
    key, _ = new_key(st)
    assert st.row(chat(st, key))["cost_usd"] == pytest.approx(JSON_COST)
    assert st.row(chat(st, key, stream=True))["cost_usd"] == pytest.approx(STREAM_COST)
    unknown = st.row(chat(st, key, model="other-model"))  # no price: unknown, not free
    assert unknown["total_tokens"] == 14 and unknown["cost_usd"] is None


def test_budget_spent_gives_insufficient_quota(st: Stack) -> None:
    key, key_id = new_key(st, budget_usd=0.03, budget_period="monthly")
    chat(st, key)
    chat(st, key, stream=True)
    assert snapshot(st, key_id)["spent"] == pytest.approx(JSON_COST + STREAM_COST)
    with pytest.raises(openai.RateLimitError) as err:
        chat(st, key)
    assert err.value.code == "insufficient_quota"
    assert err.value.type == "insufficient_quota"
    assert "monthly budget: $0.0365 of $0.03 spent" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"
    assert len(st.a.seen) == 2


def test_token_quota_gives_insufficient_quota(st: Stack) -> None:
    key, _ = new_key(st, token_quota=20)
    chat(st, key, stream=True)
    chat(st, key)
    with pytest.raises(openai.RateLimitError) as err:
        chat(st, key, stream=True)
    assert err.value.code == "insufficient_quota"
    assert "30 of 20 tokens" in err.value.message


def test_quota_and_budget_survive_a_restart(st: Stack) -> None:
    key, key_id = new_key(st, token_quota=30, budget_usd=1.0, budget_period="daily")
    for _ in range(2):
        st.row(chat(st, key))  # written to the usage rollups: 28 tokens, 2 x JSON_COST
    # A fresh instance (Redis: a fresh namespace, as after a Redis flush) knows only the database.
    fresh = st.settings
    if fresh.redis_url:
        fresh = fresh.model_copy(update={"redis_prefix": unique_prefix()})
    again = GatewayThread(fresh).start()
    try:
        client = openai.OpenAI(api_key=key, base_url=again.url + "/v1", max_retries=0)
        client.chat.completions.create(model="gpt-test", messages=MSG)  # 28 < 30
        held = snapshot(st, key_id, again)
        assert held["tokens"] == 42 and held["spent"] == pytest.approx(3 * JSON_COST)
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="gpt-test", messages=MSG)
        assert err.value.code == "insufficient_quota"
    finally:
        again.stop()
        if fresh.redis_url:
            drop_prefix(fresh.redis_prefix)


def test_price_changes_apply_while_running(st: Stack) -> None:
    key, _ = new_key(st)

    async def set_price(**values: Any) -> None:
        engine = create_engine(st.db_url)
        try:
            await price_service.set_price(engine, values)
        finally:
            await engine.dispose()

    run_async(set_price(model="other-model", input_per_mtok=1.0, output_per_mtok=1.0))
    wait_until(lambda: st.row(chat(st, key, model="other-model"))["cost_usd"] is not None, 5)
    # The database wins over the config file.
    run_async(set_price(model="gpt-test", input_per_mtok=0.0, output_per_mtok=0.0))
    wait_until(lambda: st.row(chat(st, key))["cost_usd"] == 0.0, 5)
    run_async(
        set_price(
            model="gpt-test",
            input_per_mtok=1000.0,
            output_per_mtok=2000.0,
            cached_input_per_mtok=500.0,
        )
    )


def test_edited_limits_apply_within_a_second(st: Stack) -> None:
    key, key_id = new_key(st, rpm=1)
    chat(st, key)
    with pytest.raises(openai.RateLimitError):
        chat(st, key)

    async def raise_limit() -> None:
        engine = create_engine(st.db_url)
        try:
            await key_service.update_key(engine, key_id, {"rpm": 3})
        finally:
            await engine.dispose()

    run_async(raise_limit())
    started = time.monotonic()

    def admitted() -> bool:
        try:
            chat(st, key)
            return True
        except openai.RateLimitError:
            return False

    wait_until(admitted, 5)
    assert time.monotonic() - started < 1.5  # revision poll is 0.2 s in these tests


# --- concurrency cap --------------------------------------------------------------------------


def in_background(fn: Any) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_concurrency_cap_and_release_after_normal_end(st: Stack) -> None:
    key, key_id = new_key(st, max_parallel=1)
    st.a.behaviour.delay = 0.5
    first = in_background(lambda: chat(st, key))
    wait_until(lambda: len(st.a.seen) == 1)
    with pytest.raises(openai.RateLimitError) as err:
        chat(st, key)
    assert err.value.code == "concurrency_limit_exceeded"
    first.join(10)
    assert snapshot(st, key_id)["in_flight"] == 0
    st.a.behaviour.delay = 0.0
    chat(st, key)
    assert snapshot(st, key_id)["in_flight"] == 0


def test_concurrency_released_after_upstream_error(st: Stack) -> None:
    key, key_id = new_key(st, max_parallel=1)
    st.a.behaviour.mode = "error"
    with pytest.raises(openai.APIStatusError):
        chat(st, key)
    assert snapshot(st, key_id)["in_flight"] == 0
    st.a.behaviour.mode = "break_stream"
    with pytest.raises(openai.APIError):
        chat(st, key, stream=True)
    assert snapshot(st, key_id)["in_flight"] == 0


def test_concurrency_released_after_client_disconnects_mid_stream(st: Stack) -> None:
    key, key_id = new_key(st, max_parallel=1)
    st.a.behaviour.chunks = 50
    st.a.behaviour.chunk_delay = 0.1
    body = {"model": "gpt-test", "messages": MSG, "stream": True}
    with httpx.stream(
        "POST",
        st.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()  # held: a dropped generator would close the response
        next(chunks)
        assert snapshot(st, key_id)["in_flight"] == 1
    wait_until(lambda: snapshot(st, key_id)["in_flight"] == 0)
    assert not st.a.stream_finished.is_set()  # we did stop it early


def test_concurrency_released_after_client_gives_up_waiting(st: Stack) -> None:
    key, key_id = new_key(st, max_parallel=1)
    st.a.behaviour.delay = 1.0
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            st.url + "/v1/chat/completions",
            json={"model": "gpt-test", "messages": MSG},
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(5.0, read=0.2),
        )
    wait_until(lambda: snapshot(st, key_id)["in_flight"] == 0)


def test_keys_without_limits_get_no_headers(st: Stack) -> None:
    raw = st.client().chat.completions.with_raw_response.create(model="gpt-test", messages=MSG)
    assert "x-ratelimit-limit-requests" not in raw.headers
