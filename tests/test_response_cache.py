"""The exact response cache through a running Tollway: opt-in per key or per request,
bypass headers, streams replayed byte for byte, scope per key, usage rows with `cache_hit`,
request limits counted but tokens not, and one cache shared by two instances over Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from tollway.gateway.cache import MemoryStore, RedisStore
from tollway.gateway.limiting import connect

from .fixtures_gateway import Stack, make_key
from .limits_support import REDIS_URL, drop_prefix, require_redis, unique_prefix
from .servers import GatewayThread, free_port

ADMIN = "cache-admin-secret-0123456789abcdef"
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("cache"), cache_ttl=60.0, admin_secret=SecretStr(ADMIN))
    yield s
    s.stop()


def post(url: str, key: str, body: bytes | dict[str, Any], **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        url + CHAT,
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
        timeout=30,
    )


def chats(st: Stack) -> int:
    return sum(1 for s in st.a.seen if s.path == CHAT)


def test_a_key_that_opted_in_gets_hits(st: Stack) -> None:
    st.reset()
    key = make_key(st.db_url, response_cache=True)
    body = {**BODY, "messages": [{"role": "user", "content": "opted in"}]}
    first = post(st.url, key, body)
    assert first.status_code == 200 and first.headers["x-tollway-cache"] == "miss"
    # Same request, other spacing, member order and `user`: still the same request.
    same = b'{ "messages": [{"content": "opted in", "role": "user"}], "model": "gpt-test",'
    second = post(st.url, key, same + b' "user": "someone"}')
    assert second.status_code == 200 and second.headers["x-tollway-cache"] == "hit"
    assert second.content == first.content
    assert chats(st) == 1

    other = post(st.url, key, {**body, "temperature": 0.5})  # another parameter: a miss
    assert other.headers["x-tollway-cache"] == "miss" and chats(st) == 2
    # Another key sending the same request never sees this key's answer.
    stranger = post(st.url, make_key(st.db_url, response_cache=True), body)
    assert stranger.headers["x-tollway-cache"] == "miss" and chats(st) == 3

    hit = st.row(second.headers["x-request-id"])
    assert hit["cache_hit"] is True and hit["status"] == 200
    assert (hit["upstream"], hit["cost_usd"], hit["total_tokens"]) == (None, 0.0, None)
    miss = st.row(first.headers["x-request-id"])
    assert miss["cache_hit"] is False and miss["upstream"] == "a" and miss["total_tokens"]


def test_bypass_headers(st: Stack) -> None:
    st.reset()
    key = make_key(st.db_url, response_cache=True)
    body = {**BODY, "messages": [{"role": "user", "content": "bypass"}]}
    assert post(st.url, key, body).headers["x-tollway-cache"] == "miss"
    assert "x-tollway-cache" not in post(st.url, key, body, **{"x-tollway-cache": "off"}).headers
    assert "x-tollway-cache" not in post(st.url, key, body, **{"Cache-Control": "no-store"}).headers
    fresh = post(st.url, key, body, **{"Cache-Control": "no-cache"})
    assert fresh.headers["x-tollway-cache"] == "miss"  # not read, but stored again
    assert chats(st) == 4
    assert post(st.url, key, body).headers["x-tollway-cache"] == "hit" and chats(st) == 4


def test_a_request_header_opts_in_for_a_key_that_did_not(st: Stack) -> None:
    st.reset()
    body = {**BODY, "messages": [{"role": "user", "content": "header"}]}
    assert "x-tollway-cache" not in post(st.url, st.key, body).headers
    assert "x-tollway-cache" not in post(st.url, st.key, body).headers
    on = {"x-tollway-cache": "on"}
    assert post(st.url, st.key, body, **on).headers["x-tollway-cache"] == "miss"
    assert post(st.url, st.key, body, **on).headers["x-tollway-cache"] == "hit"
    assert chats(st) == 3


def test_streams_are_replayed_byte_for_byte(st: Stack) -> None:
    st.reset()
    key = make_key(st.db_url, response_cache=True)
    client = st.client(key)
    msgs: Any = [{"role": "user", "content": "stream me"}]
    raw = [
        client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=msgs, stream=True
        )
        for _ in range(2)
    ]
    assert [r.headers["x-tollway-cache"] for r in raw] == ["miss", "hit"]
    streams = [list(r.parse()) for r in raw]
    assert [c.model_dump() for c in streams[0]] == [c.model_dump() for c in streams[1]]
    assert len(streams[0]) == 5 and chats(st) == 1
    # Raw bytes: identical to what the first client got (no usage chunk it did not ask for).
    body = {**BODY, "messages": msgs, "stream": True}
    first = post(st.url, key, {**body, "n": 1})
    again = post(st.url, key, {**body, "n": 1})
    assert again.headers["x-tollway-cache"] == "hit" and again.content == first.content
    assert again.headers["content-type"].startswith("text/event-stream")
    assert first.content.endswith(b"data: [DONE]\n\n") and b'"usage"' not in first.content
    hit = st.row(raw[1].headers["x-request-id"])
    assert hit["cache_hit"] is True and hit["stream"] is True


def test_hits_count_against_request_limits_not_tokens(st: Stack) -> None:
    st.reset()
    body = {**BODY, "messages": [{"role": "user", "content": "limits"}]}
    limited = make_key(st.db_url, response_cache=True, rpm=2)
    assert post(st.url, limited, body).status_code == 200
    assert post(st.url, limited, body).headers["x-tollway-cache"] == "hit"
    assert post(st.url, limited, body).status_code == 429  # the hit counted as a request

    # The fake upstream's answer costs 11 prompt + 5 completion tokens: a quota of 17 lets a
    # second upstream answer through only if the hit in between used no tokens.
    quota = make_key(st.db_url, response_cache=True, token_quota=17)
    assert post(st.url, quota, body).status_code == 200
    assert post(st.url, quota, body).headers["x-tollway-cache"] == "hit"
    other = {**body, "temperature": 0}
    assert post(st.url, quota, other).status_code == 200  # 16 < 17 before it
    assert post(st.url, quota, {**body, "temperature": 1}).status_code == 429  # 32 now


def test_off_without_a_ttl(tmp_path: Path) -> None:
    s = Stack(tmp_path)
    try:
        key = make_key(s.db_url, response_cache=True)
        for _ in range(2):
            r = post(s.url, key, BODY, **{"x-tollway-cache": "on"})
            assert r.status_code == 200 and "x-tollway-cache" not in r.headers
        assert chats(s) == 2
    finally:
        s.stop()


@pytest.mark.redis
def test_two_instances_share_the_cache_through_redis(tmp_path: Path) -> None:
    require_redis()
    prefix = unique_prefix()
    s = Stack(tmp_path, cache_ttl=60.0, redis_url=REDIS_URL, redis_prefix=prefix)
    second = GatewayThread(s.settings).start()
    try:
        key = make_key(s.db_url, response_cache=True)
        body = {**BODY, "messages": [{"role": "user", "content": "shared"}]}
        first = post(s.url, key, body)
        assert first.headers["x-tollway-cache"] == "miss"
        other = post(second.url, key, body)
        assert other.headers["x-tollway-cache"] == "hit" and other.content == first.content
        assert chats(s) == 1
        stream = {**body, "stream": True}
        assert post(second.url, key, stream).headers["x-tollway-cache"] == "miss"
        replay = post(s.url, key, stream)
        assert replay.headers["x-tollway-cache"] == "hit" and b"[DONE]" in replay.content
        assert chats(s) == 2
        assert s.row(other.headers["x-request-id"])["cache_hit"] is True
    finally:
        second.stop()
        s.stop()
        drop_prefix(prefix)


def test_the_cli_turns_a_keys_cache_on_and_off(st: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import time

    from typer.testing import CliRunner

    from tollway.cli.main import app
    from tollway.core.settings import get_settings

    monkeypatch.setenv("TOLLWAY_DATABASE_URL", st.db_url)
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        made = runner.invoke(app, ["create-key", "--name", "cached", "--cache", "--json"])
        assert made.exit_code == 0, made.output
        created = json.loads(made.stdout)
        assert created["response_cache"] is True
        st.reset()
        body = {**BODY, "messages": [{"role": "user", "content": "cli"}]}
        post(st.url, created["key"], body)
        assert post(st.url, created["key"], body).headers["x-tollway-cache"] == "hit"
        off = runner.invoke(app, ["update-key", str(created["id"]), "--no-cache", "--json"])
        assert off.exit_code == 0 and json.loads(off.stdout)["response_cache"] is False
        deadline = time.monotonic() + 10  # every instance forgets the changed key at once
        while "x-tollway-cache" in post(st.url, created["key"], body).headers:
            assert time.monotonic() < deadline, "the key's change did not reach the gateway"
            time.sleep(0.1)
    finally:
        get_settings.cache_clear()


def test_the_admin_api_sets_a_keys_cache(st: Stack) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(
        st.url + "/admin/api/keys", json={"name": "api", "response_cache": True}, headers=auth
    )
    assert made.status_code in (200, 201), made.text
    created = made.json()
    assert created["info"]["response_cache"] is True
    body = {**BODY, "messages": [{"role": "user", "content": "admin api"}]}
    post(st.url, created["key"], body)
    assert post(st.url, created["key"], body).headers["x-tollway-cache"] == "hit"


async def test_memory_store_expires_and_evicts_by_bytes() -> None:
    now = [0.0]
    store = MemoryStore(10, clock=lambda: now[0])
    await store.put("a", b"12345", ttl=5)
    await store.put("b", b"12345", ttl=50)
    assert await store.get("a") == b"12345"  # now the most recently used
    await store.put("c", b"123", ttl=50)  # 13 bytes > 10: the least recently used goes
    assert await store.get("b") is None and await store.get("a") == b"12345"
    await store.put("big", b"x" * 11, ttl=50)  # larger than the whole bound: not kept
    assert await store.get("big") is None and store.size == 8
    now[0] = 6.0
    assert await store.get("a") is None and await store.get("c") == b"123"  # a expired


async def test_an_unreachable_redis_is_a_miss() -> None:
    store = RedisStore(connect(f"redis://127.0.0.1:{free_port()}/0", 0.2), "nowhere")
    try:
        await store.put("k", b"v", ttl=5)  # no exception
        assert await store.get("k") is None
    finally:
        await store.close()
