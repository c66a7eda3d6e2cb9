"""Every error a client can meet, in OpenAI's format with the right status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from .fixtures_gateway import Stack, make_key

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def post(
    stack: Stack, body: bytes | None = None, key: str | None = None, **kw: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or stack.key}", "Content-Type": "application/json"}
    with httpx.Client(timeout=20) as http:
        if body is None:
            return http.post(stack.url + "/v1/chat/completions", headers=headers, **kw)  # type: ignore[arg-type]
        return http.post(stack.url + "/v1/chat/completions", headers=headers, content=body)


def error_of(resp: httpx.Response) -> dict[str, object]:
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "x-request-id" in resp.headers
    return err  # type: ignore[no-any-return]


def test_missing_key(fresh: Stack) -> None:
    with httpx.Client() as http:
        resp = http.post(fresh.url + "/v1/chat/completions", json=CHAT)
    assert resp.status_code == 401
    assert error_of(resp)["code"] == "invalid_api_key"


def test_disabled_and_expired_keys(fresh: Stack) -> None:
    disabled = make_key(fresh.db_url, name="off", enabled=False)
    with pytest.raises(openai.PermissionDeniedError) as err:
        fresh.client(key=disabled).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert "disabled" in err.value.message
    expired = make_key(
        fresh.db_url, name="old", expires_at=datetime.now(UTC) + timedelta(seconds=1)
    )
    fresh.client(key=expired).models.list()
    import time

    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError) as err2:
        fresh.client(key=expired).models.list()
    assert err2.value.code == "key_expired" and "expired" in err2.value.message


def test_model_allow_list(fresh: Stack) -> None:
    limited = make_key(fresh.db_url, name="limited", models=["gpt-test"])
    assert [m.id for m in fresh.client(key=limited).models.list()] == ["gpt-test"]
    with pytest.raises(openai.PermissionDeniedError) as err:
        fresh.client(key=limited).chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.code == "model_not_allowed"


def test_unknown_model(fresh: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        fresh.client().chat.completions.create(model="nope", messages=[])
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        fresh.client().models.retrieve("nope")


def test_malformed_json_and_wrong_types(fresh: Stack) -> None:
    resp = post(fresh, b'{"model": "gpt-test", "messages": [')
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_json"
    resp = post(fresh, b"[1, 2]")
    assert resp.status_code == 400
    resp = post(fresh, b'{"model": 42}')
    assert resp.status_code == 400 and error_of(resp)["param"] == "model"


def test_body_too_large(fresh: Stack) -> None:
    limit = fresh.settings.max_body_bytes
    resp = post(fresh, b'{"model": "gpt-test", "x": "' + b"a" * limit + b'"}')
    assert resp.status_code == 413 and error_of(resp)["code"] == "request_too_large"


def test_upstream_error_passes_through_without_its_key(fresh: Stack) -> None:
    fresh.a.behaviour.mode = "error"
    fresh.a.behaviour.status = 400
    resp = post(fresh, json=CHAT)
    assert resp.status_code == 400
    assert error_of(resp)["message"] == "upstream exploded"
    assert fresh.last_row()["error_type"] == "upstream_error"


def test_upstream_rejecting_our_key_is_a_502_without_the_key(fresh: Stack) -> None:
    fresh.a.behaviour.mode = "reject_key"
    resp = post(fresh, json=CHAT)
    assert resp.status_code == 502
    assert error_of(resp)["code"] == "upstream_auth_failed"
    assert fresh.a.api_key not in resp.text


def test_failover_to_next_upstream_on_5xx(fresh: Stack) -> None:
    # shared-model is served by a and b; whichever is tried first fails.
    fresh.a.behaviour.mode = "error"
    fresh.b.behaviour.mode = "error"
    resp = post(fresh, json={**CHAT, "model": "shared-model"})
    assert resp.status_code == 500
    assert len(fresh.a.seen) == 1 and len(fresh.b.seen) == 1
    fresh.reset()
    fresh.a.behaviour.mode = "error"
    for _ in range(5):
        reply = fresh.client().chat.completions.create(
            model="shared-model", messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content == "Hello from upstream"
    assert len(fresh.b.seen) == 5


def test_failover_when_upstream_is_down(fresh: Stack, unused_port: int) -> None:
    rt = fresh.gateway.app.runtime
    assert rt is not None
    a = next(u for u in rt.pool.upstreams if u.name == "a")
    real = a.base_url
    a.base_url = f"http://127.0.0.1:{unused_port}/v1"
    try:
        for _ in range(3):
            reply = fresh.client().chat.completions.create(
                model="shared-model", messages=[{"role": "user", "content": "x"}]
            )
            assert reply.choices[0].message.content
        resp = post(fresh, json=CHAT)  # gpt-test lives only on the dead upstream
        assert resp.status_code == 502 and error_of(resp)["code"] == "upstream_unreachable"
    finally:
        a.base_url = real


def test_upstream_timeout_is_504(fresh: Stack) -> None:
    rt = fresh.gateway.app.runtime
    assert rt is not None
    old = rt.relay.client.first_byte_timeout
    rt.relay.client.first_byte_timeout = 0.3
    fresh.a.behaviour.delay = 1.0
    try:
        resp = post(fresh, json=CHAT)
    finally:
        rt.relay.client.first_byte_timeout = old
    assert resp.status_code == 504 and error_of(resp)["code"] == "upstream_timeout"


def test_no_upstream_for_modelless_requests(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    stack = Stack(
        tmp_path, upstreams=[{"name": "only", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}]
    )
    try:
        with httpx.Client(headers={"x-api-key": stack.key}) as http:
            resp = http.get(stack.url + "/v1/files")
        assert resp.status_code == 503 and error_of(resp)["code"] == "no_upstream_available"
    finally:
        stack.stop()


def test_non_v1_paths_are_openai_style_404(fresh: Stack) -> None:
    with httpx.Client() as http:
        resp = http.get(fresh.url + "/nope")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
