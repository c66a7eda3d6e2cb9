"""Azure OpenAI upstreams through Tollway with the openai SDK: a fake Azure resource (a real
aiohttp server on 127.0.0.1) that answers only on Azure's paths, with `api-version` and the
`api-key` header, as Azure does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from tollway.upstreams.azure import AzureRoute

from .fixtures_gateway import Stack

AZURE_KEY = "azure-SECRET-key-0001"
API_VERSION = "2024-10-21"


class FakeAzure:
    """Answers chat (plain and streamed) and embeddings on deployment paths and on /openai/v1."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], dict[str, Any]]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAzure:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            assert site._server is not None
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        threading.Thread(target=run, name="fake-azure", daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read() or b"{}")
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append((request.path, request.query_string, headers, body))
        if request.headers.get("api-key") != AZURE_KEY or "Authorization" in request.headers:
            return web.json_response({"error": {"code": "401", "message": "bad key"}}, status=401)
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["openai", "v1"]:
            deployment, op = body.get("model"), "/".join(parts[2:])
        elif parts[:2] == ["openai", "deployments"] and request.query.get("api-version"):
            deployment, op = parts[2], "/".join(parts[3:])
        else:
            return web.json_response({"error": {"code": "404", "message": "no"}}, status=404)
        if op == "embeddings":
            return web.json_response(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                    "model": deployment,
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                }
            )
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            delta = {"index": 0, "delta": {"content": f"via {deployment}"}, "finish_reason": None}
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0}
            await resp.write(b"data: " + orjson.dumps({**chunk, "choices": [delta]}) + b"\n\n")
            last = {**chunk, "choices": [], "usage": usage}
            await resp.write(b"data: " + orjson.dumps(last) + b"\n\n" + b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        message = {"role": "assistant", "content": f"via {deployment}"}
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": deployment,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        )


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FakeAzure]]:
    fake = FakeAzure().start()
    common = {"provider": "azure", "base_url": fake.base_url, "api_key": AZURE_KEY}
    upstreams = [
        {
            "name": "azure",
            **common,
            "api_version": API_VERSION,
            "deployments": {"gpt-4o": "prod-gpt4o", "text-embedding-3-small": "emb"},
        },
        {"name": "azure-v1", **common, "api_version": "v1", "deployments": {"gpt-v1": "dep-v1"}},
    ]
    stack = Stack(tmp_path_factory.mktemp("azure"), upstreams=upstreams)
    yield stack, fake
    stack.stop()
    fake.stop()


def test_chat_goes_to_the_deployment_path_with_api_version_and_api_key(
    azure: tuple[Stack, FakeAzure],
) -> None:
    stack, fake = azure
    result = stack.client().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert result.choices[0].message.content == "via prod-gpt4o"
    path, query, headers, _ = fake.seen[-1]
    assert (path, query) == (
        "/openai/deployments/prod-gpt4o/chat/completions",
        "api-version=2024-10-21",
    )
    assert headers["api-key"] == AZURE_KEY and "authorization" not in headers
    row = stack.row(headers["x-request-id"])
    assert (row["status"], row["total_tokens"], row["upstream"]) == (200, 4, "azure")


def test_streaming_and_embeddings_on_azure(azure: tuple[Stack, FakeAzure]) -> None:
    stack, fake = azure
    client = stack.client()
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "via prod-gpt4o"
    )
    emb = client.embeddings.create(model="text-embedding-3-small", input="x")
    assert emb.data[0].embedding == [0.5]
    path, query, _, _ = fake.seen[-1]
    assert (path, query) == ("/openai/deployments/emb/embeddings", "api-version=2024-10-21")


def test_the_v1_api_takes_the_deployment_as_the_model(azure: tuple[Stack, FakeAzure]) -> None:
    stack, fake = azure
    result = stack.client().chat.completions.create(
        model="gpt-v1", messages=[{"role": "user", "content": "hi"}]
    )
    assert result.choices[0].message.content == "via dep-v1"
    path, query, headers, body = fake.seen[-1]
    assert (path, query, body["model"]) == ("/openai/v1/chat/completions", "", "dep-v1")
    assert headers["api-key"] == AZURE_KEY


def test_models_of_an_azure_upstream_are_its_deployments(azure: tuple[Stack, FakeAzure]) -> None:
    stack, _ = azure
    listed = {m.id for m in stack.client().models.list()}
    assert {"gpt-4o", "text-embedding-3-small", "gpt-v1"} <= listed


def test_azure_paths_keep_the_query_and_the_clients_api_version() -> None:
    route = AzureRoute("2024-10-21", {"m": "dep 1"})
    assert route.path(b"/chat/completions?x=1", "m") == (
        b"/openai/deployments/dep%201/chat/completions?x=1&api-version=2024-10-21"
    )
    assert route.path(b"/chat/completions", "other") == (
        b"/openai/deployments/other/chat/completions?api-version=2024-10-21"
    )
    assert route.path(b"/files", None) == b"/openai/files?api-version=2024-10-21"
    assert route.path(b"/embeddings?api-version=2025-01-01", "m") == (
        b"/openai/deployments/dep%201/embeddings?api-version=2025-01-01"
    )
    assert route.models_path() == "/openai/models?api-version=2024-10-21"
    assert AzureRoute("v1").path(b"/responses", "m") == b"/openai/v1/responses"
