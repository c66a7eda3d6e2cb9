"""Model listing that matches routing: models of "every model" upstreams are discovered and
listed, and `GET /v1/models/{id}` for a model Tollway does not list goes to an upstream that
may serve it. Also: the `"usage":null` members Tollway's own usage request adds to stream
chunks are gone for clients that did not ask for usage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .fake_upstream import FakeUpstream
from .fixtures_gateway import make_key
from .pool_rig import Rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, FakeUpstream]]:
    a = FakeUpstream("a", "sk-upstream-SECRET-aaaa").start()
    b = FakeUpstream("b", "sk-upstream-SECRET-bbbb").start()
    b.models = ["b-model", "org/b-two"]
    config = {
        "upstreams": [
            {"name": "a", "base_url": a.base_url, "api_key": a.api_key, "models": ["gpt-test"]},
            {"name": "b", "base_url": b.base_url, "api_key": b.api_key, "models": "*"},
        ]
    }  # no `routing:`: discovery is on by default
    r = Rig(tmp_path_factory.mktemp("catalog"), config)
    yield r, b
    r.stop()
    a.stop()
    b.stop()


def _listed(client: openai.OpenAI, model: str) -> list[str]:
    """The listing once it holds `model` (discovery runs in the background at start)."""
    deadline = time.monotonic() + 10
    while True:
        ids = [m.id for m in client.models.list()]
        if model in ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.05)


def test_models_of_every_model_upstreams_are_listed_and_retrieved(
    rig: tuple[Rig, FakeUpstream],
) -> None:
    r, b = rig
    client = r.client()
    assert _listed(client, "org/b-two") == ["b-model", "gpt-test", "org/b-two"]
    listed = client.models.retrieve("org/b-two")  # listed: answered by Tollway itself
    assert (listed.id, listed.owned_by) == ("org/b-two", "tollway")

    # A model the upstream serves but Tollway has not discovered yet (discovery is cached):
    # the upstream's own answer, fetched with the upstream's key.
    b.models.append("brand-new")
    b.seen.clear()
    raw = client.models.with_raw_response.retrieve("brand-new")
    model = raw.parse()
    assert (model.id, model.owned_by, model.created) == ("brand-new", "b", 1)
    assert [(s.method, s.path) for s in b.seen] == [("GET", "/v1/models/brand-new")]
    assert b.seen[0].headers["Authorization"] == f"Bearer {b.api_key}"
    assert _wait_row(r, raw.headers["x-request-id"])

    # Unknown there too: the upstream's 404 passes through.
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert "no-such-model" in caught.value.message
    assert b.seen[-1].path == "/v1/models/no-such-model"


def _wait_row(r: Rig, request_id: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for row in r.usage_rows():
            if row["request_id"] == request_id:
                assert (row["status"], row["model"], row["upstream"]) == (200, "brand-new", "b")
                return True
        time.sleep(0.05)
    return False


def test_a_key_limited_to_models_never_reaches_out(rig: tuple[Rig, FakeUpstream]) -> None:
    r, b = rig
    key = make_key(r.db_url, models=["gpt-test"])
    client = r.client(key)
    assert [m.id for m in client.models.list()] == ["gpt-test"]
    b.seen.clear()
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("b-model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("brand-new-2")
    assert b.seen == []


def test_discovery_is_refreshed(tmp_path: Path) -> None:
    b = FakeUpstream("b", "sk-upstream-SECRET-bbbb").start()
    config = {
        "upstreams": [{"name": "b", "base_url": b.base_url, "api_key": b.api_key}],
        "routing": {"discovery_interval": 0.2},
    }
    r = Rig(tmp_path, config)
    try:
        client = r.client()
        assert _listed(client, "b-model") == ["b-model"]
        b.models = ["b-model", "later-model"]
        assert _listed(client, "later-model") == ["b-model", "later-model"]
    finally:
        r.stop()
        b.stop()


def _stream_bytes(r: Rig, **extra: object) -> bytes:
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream(
        "POST",
        r.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {r.key}"},
        json={**body, **extra},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        return resp.read()


def test_usage_null_is_stripped_for_clients_that_did_not_ask(
    rig: tuple[Rig, FakeUpstream],
) -> None:
    r, _ = rig
    plain = _stream_bytes(r)
    assert b'"usage"' not in plain  # neither the nulls nor the usage-only chunk
    assert plain.count(b"data: ") == 6 and plain.endswith(b"data: [DONE]\n\n")
    asked = _stream_bytes(r, stream_options={"include_usage": True})
    assert asked.count(b'"usage":null') == 5  # what the client asked for, untouched
    assert b'"usage":{"prompt_tokens"' in asked

    # The openai SDK reads the stripped chunks as before: usage is None on each.
    chunks = list(
        r.client().chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert len(chunks) == 5 and all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
