"""The admin REST API on a real Tollway (uvicorn on 127.0.0.1), driven with httpx; client
requests through the gateway with the official openai SDK."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from tollway.core.throttle import FailureThrottle

from .fixtures_gateway import Stack

SECRET = "admin-secret-for-tests-0123456789"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("admin"), admin_secret=SecretStr(SECRET))
    yield s
    s.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url + "/admin/api", headers={"Authorization": f"Bearer {SECRET}"}
    ) as client:
        yield client


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    err: dict[str, Any] = body["error"]
    return err


def new_key(api: httpx.Client, **fields: Any) -> tuple[int, str]:
    resp = api.post("/keys", json={"name": "k", **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()["info"]["id"], resp.json()["key"]


# --- authentication ---------------------------------------------------------------------------


def operations(stack: Stack) -> list[tuple[str, str]]:
    schema = httpx.get(stack.url + "/admin/api/openapi.json").json()
    return [
        (method.upper(), path.replace("{key_id}", "1").replace("{upstream_id}", "1"))
        for path, item in schema["paths"].items()
        for method in item
    ]


def test_every_operation_needs_the_secret(stack: Stack) -> None:
    ops = operations(stack)
    assert ("POST", "/keys") in ops and ("GET", "/usage/export.csv") in ops
    base = stack.url + "/admin/api"
    for method, path in ops:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-secret-wrong-secret"},
            {"Authorization": f"Basic {SECRET}"},
            {"Authorization": f"Bearer {SECRET}x"},
        ):
            # Forget earlier failures: past 10 from one address the answer is 429 (tested in
            # test_admin_proxy.py), and this test is about every route's own check.
            runtime = stack.gateway.app.runtime
            assert runtime is not None
            runtime.admin_failures = FailureThrottle()
            resp = httpx.request(method, base + path, headers=headers, json={"name": "x"})
            err = error_of(resp, 401)
            assert err["code"] == "invalid_admin_secret", (method, path)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert SECRET not in resp.text


def test_docs_and_schema_are_served(stack: Stack) -> None:
    schema = httpx.get(stack.url + "/admin/api/openapi.json").json()
    assert schema["info"]["title"] == "Tollway admin API"
    assert "AdminSecret" in schema["components"]["securitySchemes"]
    docs = httpx.get(stack.url + "/admin/api/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_unknown_path_and_method(api: httpx.Client) -> None:
    assert error_of(api.get("/nope"), 404)["code"] == "not_found"
    assert error_of(api.put("/keys"), 405)["code"] == "method_not_allowed"


# --- keys -------------------------------------------------------------------------------------


def test_created_key_works_at_once_and_secret_shown_once(stack: Stack, api: httpx.Client) -> None:
    resp = api.post(
        "/keys",
        json={"name": "app", "email": "a@b.io", "rpm": 100, "models": ["gpt-test", "gpt-test"]},
    )
    assert resp.status_code == 201
    body = resp.json()
    secret, info = body["key"], body["info"]
    assert secret.startswith("tw-") and info["prefix"] == secret[:10]
    assert (info["name"], info["rpm"], info["models"], info["status"]) == (
        "app",
        100,
        ["gpt-test"],
        "active",
    )
    out = stack.client(key=secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert out.choices[0].message.content
    got = api.get(f"/keys/{info['id']}")
    assert got.status_code == 200 and secret not in got.text and "hash" not in got.text
    assert got.json()["name"] == "app"
    listed = api.get("/keys", params={"search": secret})  # a pasted full secret finds its key
    assert [k["id"] for k in listed.json()["items"]] == [info["id"]]
    assert secret not in listed.text


def test_list_search_status_and_pages(api: httpx.Client) -> None:
    ids = [new_key(api, name=f"page-{i}", email=f"p{i}@list.io")[0] for i in range(3)]
    api.post(f"/keys/{ids[0]}/disable")
    api.patch(f"/keys/{ids[1]}", json={"expires_at": "2020-01-01T00:00:00Z"})
    page = api.get("/keys", params={"search": "@list.io", "limit": 2}).json()
    assert page["total"] == 3 and [k["id"] for k in page["items"]] == ids[:0:-1]
    rest = api.get("/keys", params={"search": "@list.io", "limit": 2, "offset": 2}).json()
    assert [k["id"] for k in rest["items"]] == [ids[0]]
    for status, expected in (("disabled", ids[0]), ("expired", ids[1]), ("active", ids[2])):
        found = api.get("/keys", params={"search": "page-", "status": status}).json()
        assert [k["id"] for k in found["items"]] == [expected]
        assert found["items"][0]["status"] == status
    for params in ({"status": "gone"}, {"limit": 0}, {"limit": 100000}, {"offset": -1}):
        assert error_of(api.get("/keys", params=params), 422)["code"] == "invalid_value"


def test_update_fields_and_clear(api: httpx.Client) -> None:
    kid, _ = new_key(api, rpm=5, email="x@y.io")
    resp = api.patch(
        f"/keys/{kid}",
        json={
            "name": "renamed",
            "rpm": None,
            "tpm": 1000,
            "budget_usd": 12.5,
            "budget_period": "monthly",
            "expires_at": "2099-01-01T00:00:00+02:00",
            "models": ["a"],
            "email": None,
        },
    )
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert (info["name"], info["rpm"], info["tpm"], info["budget_usd"], info["email"]) == (
        "renamed",
        None,
        1000,
        12.5,
        None,
    )
    assert info["expires_at"] == "2098-12-31T22:00:00Z" and info["models"] == ["a"]
    assert api.get(f"/keys/{kid}").json() == info


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": None},
        {"rpm": -1},
        {"rpm": "many"},
        {"rpm": 2**40},
        {"budget_usd": -1},
        {"budget_period": "yearly"},
        {"email": "not-an-email"},
        {"expires_at": "soon"},
        {"unknown": 1},
        ["not", "an", "object"],
    ],
)
def test_bad_fields_are_422(api: httpx.Client, body: Any) -> None:
    kid, _ = new_key(api)
    err = error_of(api.patch(f"/keys/{kid}", json=body), 422)
    assert err["type"] == "invalid_request_error" and err["message"]
    if isinstance(body, dict) and "name" not in body:
        create_body = {"name": "n", **body}
        error_of(api.post("/keys", json=create_body), 422)


def test_create_needs_a_name_and_json(api: httpx.Client) -> None:
    assert error_of(api.post("/keys", json={}), 422)["param"] == "name"
    error_of(
        api.post("/keys", content=b"{not json", headers={"content-type": "application/json"}), 422
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/keys/{id}"),
        ("PATCH", "/keys/{id}"),
        ("POST", "/keys/{id}/enable"),
        ("POST", "/keys/{id}/disable"),
        ("POST", "/keys/{id}/rotate"),
        ("DELETE", "/keys/{id}"),
        ("GET", "/keys/{id}/stats"),
    ],
)
def test_unknown_key_is_404_and_bad_id_422(api: httpx.Client, method: str, path: str) -> None:
    kw: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
    err = error_of(api.request(method, path.format(id=987654), **kw), 404)
    assert err["code"] == "not_found" and "987654" in err["message"]
    for bad in ("abc", "0", str(2**40)):
        error_of(api.request(method, path.format(id=bad), **kw), 422)


def test_disable_enable_rotate_delete_through_the_gateway(stack: Stack, api: httpx.Client) -> None:
    kid, secret = new_key(api, name="lifecycle")
    client = stack.client(key=secret)
    client.chat.completions.create(**CHAT)  # type: ignore[call-overload]  # now cached as valid

    assert api.post(f"/keys/{kid}/disable").json()["status"] == "disabled"
    # The API makes this instance forget the key at once: the very next request is refused.
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]

    assert api.post(f"/keys/{kid}/enable").json()["status"] == "active"
    client.chat.completions.create(**CHAT)  # type: ignore[call-overload]

    rotated = api.post(f"/keys/{kid}/rotate")
    assert rotated.status_code == 200
    new_secret = rotated.json()["key"]
    assert new_secret != secret and rotated.json()["info"]["id"] == kid
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    stack.client(key=new_secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    stats = api.get(f"/keys/{kid}/stats")
    assert stats.status_code == 200  # history survives the rotation

    deleted = api.delete(f"/keys/{kid}")
    assert deleted.status_code == 204 and deleted.content == b""
    with pytest.raises(openai.AuthenticationError):
        stack.client(key=new_secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    error_of(api.get(f"/keys/{kid}"), 404)


def test_disabled_on_one_instance_refused_by_another_within_a_second(stack: Stack) -> None:
    from .servers import GatewayThread

    other = GatewayThread(stack.settings).start()
    try:
        with httpx.Client(
            base_url=stack.url + "/admin/api", headers={"Authorization": f"Bearer {SECRET}"}
        ) as api:
            kid, secret = new_key(api, name="two-instances")
            remote = openai.OpenAI(api_key=secret, base_url=other.url + "/v1", max_retries=0)
            remote.chat.completions.create(**CHAT)  # type: ignore[call-overload]  # cached there
            api.post(f"/keys/{kid}/disable")
        deadline = time.monotonic() + 1.0
        refused = False
        while not refused and time.monotonic() < deadline:
            try:
                remote.chat.completions.create(**CHAT)  # type: ignore[call-overload]
                time.sleep(0.05)
            except openai.PermissionDeniedError:
                refused = True
        assert refused, "the other instance still accepted the disabled key after a second"
    finally:
        other.stop()


# --- usage ------------------------------------------------------------------------------------


def test_key_stats_and_usage_match_requests_made(stack: Stack, api: httpx.Client) -> None:
    kid, secret = new_key(api, name="counted")
    client = stack.client(key=secret)
    ids = []
    for _ in range(3):
        resp = client.chat.completions.with_raw_response.create(**CHAT)  # type: ignore[call-overload]
        ids.append(resp.headers["x-request-id"])
    emb = client.embeddings.with_raw_response.create(model="gpt-test", input="hello")
    ids.append(emb.headers["x-request-id"])
    rows = [stack.row(rid) for rid in ids]
    tokens = sum(r["total_tokens"] or 0 for r in rows)
    cost = sum(r["cost_usd"] or 0.0 for r in rows)

    stats = api.get(f"/keys/{kid}/stats", params={"recent": 2}).json()
    assert stats["totals"]["requests"] == 4 and stats["totals"]["errors"] == 0
    assert stats["totals"]["total_tokens"] == tokens > 0
    assert stats["totals"]["cost_usd"] == pytest.approx(cost)
    assert {g["name"]: g["requests"] for g in stats["by_endpoint"]} == {
        "/v1/chat/completions": 3,
        "/v1/embeddings": 1,
    }
    assert [g["name"] for g in stats["by_model"]] == ["gpt-test"]
    assert [r["request_id"] for r in stats["recent"]] == [ids[3], ids[2]]

    totals = api.get("/usage/totals", params={"key_id": kid}).json()
    assert (totals["requests"], totals["total_tokens"]) == (4, tokens)
    per_key = {k["key_id"]: k for k in api.get("/usage/keys", params={"limit": 1000}).json()}
    assert per_key[kid]["requests"] == 4 and per_key[kid]["name"] == "counted"
    ups = api.get("/usage/upstreams", params={"key_id": kid}).json()
    assert sum(u["requests"] for u in ups) == 4 and {u["name"] for u in ups} <= {"a", "b"}
    models = api.get("/usage/models", params={"key_id": kid}).json()
    assert [(m["name"], m["requests"]) for m in models] == [("gpt-test", 4)]
    eps = api.get("/usage/endpoints", params={"key_id": kid, "order": "tokens"}).json()
    assert eps[0]["name"] == "/v1/chat/completions"
    series = api.get("/usage/series", params={"key_id": kid, "bucket": "hour"}).json()
    assert len(series) in (24, 25) and sum(p["requests"] for p in series) == 4
    report = api.get("/usage", params={"key_id": kid}).json()
    assert report["totals"]["requests"] == 4 and report["bucket"] == "day"
    assert report["by_key"][0]["key_id"] == kid

    records = api.get("/usage/records", params={"key_id": kid, "limit": 3}).json()
    assert [r["request_id"] for r in records["items"]] == ids[:0:-1]
    more = api.get(
        "/usage/records", params={"key_id": kid, "limit": 3, "cursor": records["next_cursor"]}
    ).json()
    assert [r["request_id"] for r in more["items"]] == ids[:1] and more["next_cursor"] is None
    assert (
        api.get("/usage/records", params={"key_id": kid, "status": "error"}).json()["items"] == []
    )

    export = api.get("/usage/export.csv", params={"key_id": kid})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows_csv = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["request_id"] for r in rows_csv] == ids
    assert secret not in export.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/usage", {"bucket": "week"}),
        ("/usage", {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
        ("/usage/series", {"start": "2000-01-01T00:00:00Z", "bucket": "hour"}),
        ("/usage/totals", {"start": "yesterday"}),
        ("/usage/keys", {"order": "name"}),
        ("/usage/models", {"limit": 0}),
        ("/usage/upstreams", {"key_id": -1}),
        ("/usage/endpoints", {"limit": 5000}),
        ("/usage/records", {"status": "bad"}),
        ("/usage/records", {"cursor": 0}),
        ("/usage/export.csv", {"status": "7xx"}),
    ],
)
def test_usage_bad_parameters_are_422(api: httpx.Client, path: str, params: dict[str, Any]) -> None:
    err = error_of(api.get(path, params=params), 422)
    assert err["code"] == "invalid_value" and err["message"]


# --- the secret itself ------------------------------------------------------------------------


def test_secret_stored_by_init_after_start_works_and_none_means_503(tmp_path: Any) -> None:
    from tollway.services.admin_secret import ensure_admin_secret
    from tollway.store.db import create_engine

    from .fixtures_gateway import run_async

    s = Stack(tmp_path)  # no TOLLWAY_ADMIN_SECRET, none stored yet
    try:
        base = s.url + "/admin/api"
        err = error_of(httpx.get(base + "/keys", headers={"Authorization": "Bearer x"}), 503)
        assert err["code"] == "admin_disabled" and "tollway init" in err["message"]

        async def init() -> str | None:
            engine = create_engine(s.db_url)
            try:
                return await ensure_admin_secret(engine, s.settings)
            finally:
                await engine.dispose()

        stored = run_async(init())
        assert stored is not None
        # Stored while the server runs: picked up on the next failed check (rate-limited).
        deadline = time.monotonic() + 3
        status = 0
        while status != 200 and time.monotonic() < deadline:
            status = httpx.get(
                base + "/keys", headers={"Authorization": f"Bearer {stored}"}
            ).status_code
            time.sleep(0.1)
        assert status == 200
        error_of(httpx.get(base + "/keys", headers={"Authorization": "Bearer nope"}), 401)
    finally:
        s.stop()


def test_too_short_secret_keeps_the_admin_api_off(tmp_path: Any) -> None:
    s = Stack(tmp_path, admin_secret=SecretStr("short"))
    try:
        resp = httpx.get(s.url + "/admin/api/keys", headers={"Authorization": "Bearer short"})
        assert error_of(resp, 503)["code"] == "admin_disabled"
    finally:
        s.stop()
