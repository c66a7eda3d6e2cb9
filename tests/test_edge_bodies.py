"""Finding 6: request bodies held at once are bounded process-wide. Past the budget a request
gets 503 with Retry-After; every way a request ends gives its share back."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from .fixtures_gateway import Stack, run_async

MIB = 1024 * 1024
BUDGET = 8 * MIB
BODY = 3 * MIB  # two fit in the budget, a third does not


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("bodies"), max_buffered_body_bytes=BUDGET, max_body_bytes=16 * MIB
    )
    yield s
    s.stop()


def held(stack: Stack) -> int:
    rt = stack.gateway.app.runtime
    assert rt is not None
    return rt.gateway.bodies.held


def wait_for(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


@pytest.fixture
def gate(stack: Stack) -> Iterator[threading.Event]:
    """The upstream holds every request until the test opens the gate."""
    stack.reset()
    opened = threading.Event()

    async def respond(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.to_thread(opened.wait)
        return web.json_response(stack.a._completion({"model": "gpt-test"}, request.path))

    stack.a.behaviour.respond = respond
    yield opened
    opened.set()
    wait_for(lambda: held(stack) == 0, "budget released after the test")


def big_message(size: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "x" * size}]


def test_concurrent_large_bodies_past_the_budget_get_503_then_all_is_released(
    stack: Stack, gate: threading.Event
) -> None:
    results: list[Any] = []

    async def one(client: openai.AsyncOpenAI) -> Any:
        try:
            return await client.chat.completions.create(
                model="gpt-test",
                messages=big_message(BODY),  # type: ignore[arg-type]
            )
        except openai.APIStatusError as exc:
            return exc

    async def six() -> None:
        client = stack.aclient()
        tasks = [asyncio.ensure_future(one(client)) for _ in range(6)]
        # The refused come back while the two admitted wait at the upstream.
        pending = set(tasks)
        while len(pending) > 2:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        early = [t for t in tasks if t.done()]
        assert all(isinstance(t.result(), openai.APIStatusError) for t in early)
        assert 2 * BODY < held(stack) <= BUDGET  # the two admitted bodies, nothing else
        gate.set()
        results.extend([await t for t in tasks])
        await client.close()

    run_async(six())
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    served = [r for r in results if not isinstance(r, openai.APIStatusError)]
    assert len(refused) == 4 and len(served) == 2
    for exc in refused:
        assert exc.status_code == 503
        assert exc.response.headers["retry-after"] == "1"
        assert exc.response.json()["error"]["code"] == "server_busy"
        assert exc.response.json()["error"]["type"] == "service_unavailable_error"
    wait_for(lambda: held(stack) == 0, "budget released")
    # All of it is free again: a body bigger than the two above together passes.
    reply = stack.client().chat.completions.create(
        model="gpt-test",
        messages=big_message(BUDGET - 4096),  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content
    assert held(stack) == 0
    print(f"\n6 concurrent {BODY // MIB} MiB bodies, budget {BUDGET // MIB} MiB: 2 served, 4 x 503")


def test_chunked_body_is_counted_as_it_arrives(stack: Stack, gate: threading.Event) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"model": "gpt-test", "messages": [{"role": "user", "content": "'
        for _ in range(total // (256 * 1024)):
            yield b"y" * (256 * 1024)
        yield b'"}]}'

    def post(total: int) -> httpx.Response:
        return httpx.post(
            stack.url + "/v1/chat/completions",
            content=chunks(total),  # no Content-Length: sent chunked
            headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"},
            timeout=30,
        )

    holders = [threading.Thread(target=post, args=(BODY,)) for _ in range(2)]
    for t in holders:
        t.start()
    wait_for(lambda: held(stack) > 2 * BODY, "two chunked bodies held")
    refused = post(BODY)  # the third is refused part-way, and what it took is given back
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert 2 * BODY < held(stack) <= BUDGET
    gate.set()
    for t in holders:
        t.join(30)
    wait_for(lambda: held(stack) == 0, "budget released")


def test_client_gone_mid_body_releases_its_share(stack: Stack, gate: threading.Event) -> None:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {stack.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BODY}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", stack.gateway.settings.port)) as sock:
        sock.sendall(head + b"z" * MIB)
        wait_for(lambda: held(stack) == BODY, "declared size reserved up front")
    wait_for(lambda: held(stack) == 0, "released after the disconnect")


def test_refused_after_the_body_was_read_releases_its_share(stack: Stack) -> None:
    stack.reset()
    with pytest.raises(openai.NotFoundError):
        stack.client().chat.completions.create(
            model="no-such-model",
            messages=big_message(BODY),  # type: ignore[arg-type]
        )
    assert held(stack) == 0


def test_body_larger_than_the_whole_budget_is_413(stack: Stack) -> None:
    stack.reset()
    with pytest.raises(openai.APIStatusError) as err:
        stack.client().chat.completions.create(
            model="gpt-test",
            messages=big_message(BUDGET + MIB),  # type: ignore[arg-type]
        )
    assert err.value.status_code == 413
    assert held(stack) == 0
