"""`/v1/realtime` through Tollway: the openai SDK's realtime client against a fake Realtime
upstream (a real WebSocket server), the browser subprotocol's key, refusals, the open
session counted toward `max_parallel`, and usage from `response.done` in one usage row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .fake_realtime import FakeRealtime
from .fixtures_gateway import make_key, run_async
from .pool_rig import Rig

MODEL = "gpt-realtime"


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, FakeRealtime]]:
    fake = FakeRealtime().start()
    config = {
        "upstreams": [
            {"name": "rt", "base_url": fake.base_url, "api_key": fake.api_key, "models": [MODEL]}
        ]
    }
    rig = Rig(tmp_path_factory.mktemp("realtime"), config)
    yield rig, fake
    rig.stop()
    fake.stop()


def _row(rig: Rig, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        for row in rig.usage_rows():
            if row["request_id"] == request_id:
                return row
        assert time.monotonic() < deadline, "no usage row for the session"
        time.sleep(0.05)


def test_sdk_session_is_relayed_and_its_usage_recorded(rt: tuple[Rig, FakeRealtime]) -> None:
    rig, fake = rt
    client = rig.client()
    with client.realtime.connect(model=MODEL) as conn:
        first = conn.recv()
        assert first.type == "session.created"
        for _ in range(2):
            conn.response.create()
            done = conn.recv()
            assert done.type == "response.done"
            assert done.response.usage is not None and done.response.usage.total_tokens == 30
    # The upstream got the model, its own key (never the client's), and the events as sent.
    assert fake.paths[-1] == f"/v1/realtime?model={MODEL}"
    assert fake.headers[-1]["authorization"] == f"Bearer {fake.api_key}"
    assert rig.key not in str(fake.headers[-1])
    assert [e["type"] for e in fake.received[-2:]] == ["response.create", "response.create"]
    request_id = fake.headers[-1]["x-request-id"]
    row = _row(rig, request_id)
    assert (row["endpoint"], row["model"], row["upstream"]) == ("/v1/realtime", MODEL, "rt")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (20, 40, 60)
    assert row["status"] == 101


async def _browser_session(url: str, key: str) -> str | None:
    async with connect(
        url + f"/v1/realtime?model={MODEL}",
        subprotocols=["realtime", f"openai-insecure-api-key.{key}"],  # type: ignore[list-item]
    ) as ws:
        await ws.recv()
        return ws.subprotocol


def test_the_browser_subprotocol_carries_the_key(rt: tuple[Rig, FakeRealtime]) -> None:
    rig, _ = rt
    url = rig.url.replace("http://", "ws://")
    assert run_async(_browser_session(url, rig.key)) == "realtime"
    with pytest.raises(InvalidStatus) as caught:
        run_async(_browser_session(url, "tw-not-a-key"))
    assert caught.value.response.status_code == 403


def test_an_open_session_holds_a_parallel_slot(rt: tuple[Rig, FakeRealtime]) -> None:
    rig, _ = rt
    key = make_key(rig.db_url, max_parallel=1)
    url = rig.url.replace("http://", "ws://") + f"/v1/realtime?model={MODEL}"
    headers = {"Authorization": f"Bearer {key}"}

    async def scenario() -> tuple[int, bool]:
        async with connect(url, additional_headers=headers) as first:
            await first.recv()
            try:
                async with connect(url, additional_headers=headers):
                    refused = 0
            except InvalidStatus as exc:
                refused = exc.response.status_code
        # Closed: the slot is free again.
        await asyncio.sleep(0.2)
        async with connect(url, additional_headers=headers) as again:
            await again.recv()
            return refused, True

    refused, reopened = run_async(scenario())
    assert refused == 403 and reopened


def test_an_unknown_model_is_refused(rt: tuple[Rig, FakeRealtime], tmp_path: Path) -> None:
    rig, fake = rt
    before = len(fake.paths)

    async def scenario() -> None:
        async with connect(
            rig.url.replace("http://", "ws://") + "/v1/realtime?model=nope",
            additional_headers={"Authorization": f"Bearer {rig.key}"},
        ):
            pass

    with pytest.raises(InvalidStatus):
        run_async(scenario())
    assert len(fake.paths) == before
