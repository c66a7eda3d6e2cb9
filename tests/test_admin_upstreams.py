"""The admin API's /upstreams on a real Tollway: CRUD with write-only keys, the live pool
following at once, a real test call, balance refresh, status; 401/404/422."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from .fixtures_gateway import Stack
from .test_admin_api import SECRET, error_of

CHAT = {"model": "db-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("admin-ups"), admin_secret=SecretStr(SECRET))
    yield s
    s.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url + "/admin/api",
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=30,
    ) as client:
        yield client


def test_upstream_lifecycle_through_the_api(stack: Stack, api: httpx.Client) -> None:
    assert api.get("/upstreams").json() == []
    assert error_of(api.post("/upstreams/1/test"), 404)["code"] == "not_found"
    resp = api.post(
        "/upstreams",
        json={
            "name": "db-up",
            "base_url": stack.b.base_url,
            "api_key": stack.b.api_key,
            "models": ["db-model"],
            "provider": "vercel",
        },
    )
    assert resp.status_code == 201, resp.text
    info = resp.json()
    uid = info["id"]
    assert stack.b.api_key not in resp.text and info["key_hint"]
    assert api.get(f"/upstreams/{uid}").json() == info
    assert [u["id"] for u in api.get("/upstreams").json()] == [uid]
    assert stack.b.api_key not in api.get("/upstreams").text

    # The API reloads this instance's pool at once: the new model routes immediately.
    out = stack.client().chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert out.choices[0].message.content
    status = {s["name"]: s for s in api.get("/upstreams/status").json()}
    assert {"a", "b", "db-up"} <= set(status)
    assert status["db-up"]["source"] == "database" and status["db-up"]["requests"] >= 1
    assert stack.b.api_key not in api.get("/upstreams/status").text

    test = api.post(f"/upstreams/{uid}/test")
    assert test.status_code == 200 and test.json()["ok"] is True
    assert api.post(f"/upstreams/{uid}/test", params={"model": "db-model"}).json()["ok"]

    stack.b.behaviour.balance = 7.25
    try:
        # A real probe over HTTP: on a loaded box one can time out (balance unknown), so
        # it is asked again until the deadline.
        deadline = time.monotonic() + 15
        while True:
            fresh = api.post("/upstreams/refresh-balance", params={"name": "db-up"})
            assert fresh.status_code == 200, fresh.text
            seen = [(s["name"], s["balance_usd"]) for s in fresh.json()]
            if seen != [("db-up", None)] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == [("db-up", 7.25)]
    finally:
        stack.b.behaviour.balance = 100.0
    err = error_of(api.post("/upstreams/refresh-balance", params={"name": "nope"}), 404)
    assert "nope" in err["message"]

    patched = api.patch(f"/upstreams/{uid}", json={"weight": 3, "models": ["db-model", "x"]})
    assert patched.status_code == 200 and patched.json()["weight"] == 3.0
    assert patched.json()["models"] == ["db-model", "x"]
    bad_key = api.patch(f"/upstreams/{uid}", json={"api_key": "sk-wrong-0000000000"})
    assert bad_key.status_code == 200 and "sk-wrong-0000000000" not in bad_key.text
    failed = api.post(f"/upstreams/{uid}/test").json()
    assert failed["ok"] is False and failed["status"] == 401

    assert api.delete(f"/upstreams/{uid}").status_code == 204
    error_of(api.get(f"/upstreams/{uid}"), 404)
    assert "db-up" not in {s["name"] for s in api.get("/upstreams/status").json()}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "x"},
        {"name": "", "base_url": "http://x"},
        {"name": "x", "base_url": "http://x", "weight": -1},
        {"name": "x", "base_url": "http://x", "rpm": 0},
        {"name": "x", "base_url": "http://x", "unknown": True},
    ],
)
def test_bad_upstream_fields_are_422(api: httpx.Client, body: dict[str, Any]) -> None:
    assert error_of(api.post("/upstreams", json=body), 422)["code"] == "invalid_value"


def test_duplicate_name_and_unknown_ids(api: httpx.Client) -> None:
    body = {"name": "dup", "base_url": "http://127.0.0.1:9/v1"}
    first = api.post("/upstreams", json=body)
    assert first.status_code == 201
    error_of(api.post("/upstreams", json=body), 422)
    for method, path in (
        ("GET", "/upstreams/98765"),
        ("PATCH", "/upstreams/98765"),
        ("DELETE", "/upstreams/98765"),
        ("POST", "/upstreams/98765/test"),
    ):
        kw: dict[str, Any] = {"json": {"weight": 1}} if method == "PATCH" else {}
        assert error_of(api.request(method, path, **kw), 404)["code"] == "not_found"
        error_of(api.request(method, path.replace("98765", "0"), **kw), 422)
        error_of(api.request(method, path.replace("98765", "zero"), **kw), 404)
    assert api.delete(f"/upstreams/{first.json()['id']}").status_code == 204
