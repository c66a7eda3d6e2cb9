"""What a client can and cannot do to the pool: errors it provokes on purpose (a 403, a 400
quoting its prompt, a 429 with quota words) pass through to it and change nothing for other
clients; only structured evidence parks a key or takes an account out. And which client
headers reach an upstream: account selectors never, unless the upstream lets them through;
an upstream's own `headers:` always."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key
from .pool_rig import Rig, chats

QUOTA_WORDS = "insufficient funds / You exceeded your current quota (insufficient_quota)"
# What client A makes the upstreams answer, by what it puts in its prompt.
PROVOKED: dict[bytes, tuple[int, Any]] = {
    b"FORBIDDEN": (
        403,
        {
            "error": {
                "message": "You are not allowed to sample from this model (permission).",
                "type": "invalid_request_error",
                "code": "model_not_allowed",
            }
        },
    ),
    b"FLAGGED": (
        403,
        {"error": {"message": "Your request was flagged by moderation.", "type": "moderation"}},
    ),
    b"ECHO": (
        400,
        {
            "error": {
                "message": f"Invalid prompt: '{QUOTA_WORDS}' is not allowed",
                "type": "invalid_request_error",
                "code": None,
            }
        },
    ),
    b"BUSY": (
        429,
        {"error": {"message": f"Slow down: {QUOTA_WORDS}", "type": "rate_limit_error"}},
    ),
    b"SCOPE": (
        401,
        {
            "error": {
                "message": "You have insufficient permissions for this operation. "
                "Missing scopes: model.request.",
                "type": "invalid_request_error",
                "code": None,
            }
        },
    ),
}


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    a = FakeUpstream("a", "sk-upstream-SECRET-a").start()
    b = FakeUpstream("b", "sk-upstream-SECRET-b").start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.stop()


def entry(fake: FakeUpstream, models: list[str]) -> dict[str, Any]:
    return {"name": fake.name, "base_url": fake.base_url, "api_key": fake.api_key, "models": models}


def two_upstreams(
    rigs: list[Rig], tmp: Path, a: FakeUpstream, b: FakeUpstream, **extra: Any
) -> Rig:
    config = {
        "upstreams": [{**entry(a, ["m"]), **extra}, {**entry(b, ["m"]), **extra}],
        "routing": {"strategy": "round_robin"},
    }
    rig = Rig(tmp, config)
    rigs.append(rig)
    return rig


def ask(client: openai.OpenAI, prompt: str) -> str | None:
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    return reply.choices[0].message.content


def test_errors_a_client_provokes_leave_both_upstreams_to_the_others(
    fakes: tuple[FakeUpstream, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes
    for fake in fakes:
        fake.scripted.update(PROVOKED)
    rig = two_upstreams(rigs, tmp_path, a, b)
    client_a = rig.client(make_key(rig.db_url, name="attacker"))
    client_b = rig.client()
    pool = rig.rt.pool

    for _ in range(2):  # round robin: each provocation reaches both upstreams
        with pytest.raises(openai.PermissionDeniedError, match="not allowed to sample"):
            ask(client_a, "FORBIDDEN")
        with pytest.raises(openai.PermissionDeniedError, match="flagged"):
            ask(client_a, "FLAGGED")
        with pytest.raises(openai.BadRequestError, match="insufficient funds"):
            ask(client_a, "ECHO")
        with pytest.raises(openai.AuthenticationError, match="Missing scopes"):
            ask(client_a, "SCOPE")
    # The 429s fail over (each upstream cools down for a second), then pass through.
    with pytest.raises(openai.RateLimitError):
        ask(client_a, "BUSY")
    assert sum(1 for s in a.seen if b"BUSY" in s.body) == 1
    assert sum(1 for s in b.seen if b"BUSY" in s.body) == 1
    for up in pool.upstreams:
        assert pool.health(up) not in ("key_rejected", "out_of_credit"), up.last_error
        assert up.parked_until == 0.0 and up.acct.exhausted_until == 0.0

    rig.clock.advance(2.0)  # past the 429s' cooldown
    a.seen.clear()
    b.seen.clear()
    errors = 0
    for _ in range(30):
        try:
            assert ask(client_b, "hello") == "Hello from upstream"
        except openai.APIError:
            errors += 1
    assert errors == 0
    assert chats(a) >= 10 and chats(b) >= 10  # both still in rotation
    assert {pool.health(up) for up in pool.upstreams} == {"healthy"}


def test_an_invalid_key_still_parks_that_key_and_fails_over(
    fakes: tuple[FakeUpstream, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes
    rig = two_upstreams(rigs, tmp_path, a, b)
    pool = rig.rt.pool
    a.api_key = "sk-upstream-rotated-by-the-provider"  # ours is now invalid_api_key there
    client = rig.client()
    for _ in range(10):
        assert ask(client, "hi") == "Hello from upstream"
    assert chats(a) == 1 and chats(b) == 10
    assert pool.health(pool.by_name["a"]) == "key_rejected"
    assert pool.health(pool.by_name["b"]) == "healthy"

    # A bare 401 (no error object: a proxy in front of the provider) is about our key too.
    pool.reset_health()
    a.api_key = "sk-upstream-SECRET-a"
    a.scripted[b""] = (401, b"Unauthorized")
    for _ in range(4):
        assert ask(client, "hi") == "Hello from upstream"
    assert pool.health(pool.by_name["a"]) == "key_rejected"

    # Nothing left: 502 upstream_auth_failed, without the upstream's text.
    b.scripted[b""] = (401, b"Unauthorized")
    pool.reset_health()
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "hi")
    assert err.value.status_code == 502
    assert "upstream_auth_failed" in str(err.value.body) and "Unauthorized" not in str(err.value)


def test_structured_out_of_credit_takes_the_account_out(
    fakes: tuple[FakeUpstream, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes
    rig = two_upstreams(rigs, tmp_path, a, b)
    pool = rig.rt.pool
    client = rig.client()
    a.scripted[b""] = (402, b"Payment Required")
    for _ in range(6):
        assert ask(client, "hi") == "Hello from upstream"
    assert chats(a) == 1 and pool.health(pool.by_name["a"]) == "out_of_credit"

    # A 400 with a structured code counts (and a 429 `insufficient_quota`, as OpenAI says it).
    pool.reset_health()
    a.scripted[b""] = (400, {"error": {"message": "no", "code": "billing_hard_limit_reached"}})
    b.behaviour.mode = "no_credit"
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "hi")
    assert err.value.status_code == 503
    assert "upstream_out_of_credit" in str(err.value.body) and "quota" not in str(err.value)
    assert {pool.health(up) for up in pool.upstreams} == {"out_of_credit"}


def sdk_client(rig: Rig) -> openai.OpenAI:
    """The openai SDK as a client with OPENAI_ORG_ID / OPENAI_PROJECT_ID set would be."""
    return openai.OpenAI(
        api_key=rig.key,
        base_url=rig.url + "/v1",
        max_retries=0,
        organization="org-client",
        project="proj_client",
        default_headers={
            "X-Title": "client's own title",
            "anthropic-version": "2023-06-01",
            "x-goog-user-project": "client-billing-project",
            "x-goog-api-key": "client-credential",
        },
    )


def test_account_selecting_headers_never_reach_the_upstream(
    fakes: tuple[FakeUpstream, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    a, b = fakes
    rig = two_upstreams(rigs, tmp_path, a, b)
    sdk_client(rig).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    got = (a.seen or b.seen)[-1].headers
    assert "OpenAI-Organization" not in got and "OpenAI-Project" not in got
    assert "x-goog-user-project" not in got and "x-goog-api-key" not in got
    # What does not choose an account still goes: the SDK's own, anthropic-*, titles.
    assert got["X-Title"] == "client's own title" and got["anthropic-version"] == "2023-06-01"
    assert got["X-Stainless-Lang"] == "python" and got["User-Agent"].startswith("OpenAI/Python")
    assert got["Authorization"] in (f"Bearer {a.api_key}", f"Bearer {b.api_key}")


def test_an_upstream_sets_its_own_headers_and_may_pass_account_headers(
    fakes: tuple[FakeUpstream, FakeUpstream],
    rigs: list[Rig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = fakes
    monkeypatch.setenv("TW_TEST_REFERER", "https://gw.example.com")
    config = {
        "upstreams": [
            entry(a, ["ma"]),
            {
                **entry(b, ["mb"]),
                "headers": {"HTTP-Referer": "${TW_TEST_REFERER}", "X-Title": "Tollway"},
                "pass_headers": ["OpenAI-Organization"],
            },
        ]
    }
    rig = Rig(tmp_path, config)
    rigs.append(rig)
    client = sdk_client(rig)
    for model in ("ma", "mb"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    got_a, got_b = a.seen[-1].headers, b.seen[-1].headers
    assert "OpenAI-Organization" not in got_a and "HTTP-Referer" not in got_a
    assert got_b["OpenAI-Organization"] == "org-client" and "OpenAI-Project" not in got_b
    assert got_b["HTTP-Referer"] == "https://gw.example.com"
    assert got_b.getall("X-Title") == ["Tollway"]  # the upstream's replaces the client's
    assert got_b["Authorization"] == f"Bearer {b.api_key}"

    # Active health checks send them too.
    pool = rig.rt.pool
    pool.on_failure(pool.by_name["b"])
    rig.call(rig.rt.upstreams.check_health())  # type: ignore[union-attr]
    check = b.seen[-1]
    assert check.path == "/v1/models" and check.headers["HTTP-Referer"] == "https://gw.example.com"


def test_background_checks_park_a_key_only_on_the_relays_evidence(
    fakes: tuple[FakeUpstream, FakeUpstream], rigs: list[Rig], tmp_path: Path
) -> None:
    """Health checks and balance probes judge like the relay: a 403 (a key without the right
    to list models or read its balance) changes nothing; a 401 about the key parks it."""
    a, b = fakes
    config = {
        "upstreams": [
            {**entry(a, ["m"]), "provider": "openrouter"},
            {**entry(b, ["m"]), "provider": "openrouter"},
        ]
    }
    rig = Rig(tmp_path, config)
    rigs.append(rig)
    pool = rig.rt.pool
    up_a = pool.by_name["a"]
    forbidden = {"error": {"message": "Key lacks the models scope", "type": "permission_error"}}
    a.scripted[b""] = (403, forbidden)
    pool.on_failure(up_a)
    rig.call(rig.rt.upstreams.check_health())  # type: ignore[union-attr]
    rig.call(rig.rt.upstreams.refresh_balances())  # type: ignore[union-attr]
    assert pool.health(up_a) != "key_rejected"
    a.scripted[b""] = (401, {"error": {"message": "bad key", "code": "invalid_api_key"}})
    rig.call(rig.rt.upstreams.refresh_balances())  # type: ignore[union-attr]
    assert pool.health(up_a) == "key_rejected"
    assert pool.health(pool.by_name["b"]) == "healthy"
