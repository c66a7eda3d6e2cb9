"""Admin changes reach a running gateway within a second; the whole path on PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tollway.services import keys as key_service
from tollway.store.db import create_engine

from .fixtures_gateway import Stack, run_async

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def key_id_of(stack: Stack, secret: str) -> int:
    async def find() -> int:
        engine = create_engine(stack.db_url)
        try:
            page = await key_service.list_keys(engine, search=secret[:10])
            return page.items[0].id
        finally:
            await engine.dispose()

    result: int = run_async(find())
    return result


def change(stack: Stack, fn: object, *args: object) -> object:
    async def go() -> object:
        engine = create_engine(stack.db_url)
        try:
            return await fn(engine, *args)  # type: ignore[operator]
        finally:
            await engine.dispose()

    return run_async(go())


def refused_within(stack: Stack, secret: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            stack.client(key=secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
        except (openai.PermissionDeniedError, openai.AuthenticationError):
            return True
        time.sleep(0.05)
    return False


def test_disabled_key_refused_within_a_second_and_rotation(fresh: Stack) -> None:
    from .fixtures_gateway import make_key

    secret = make_key(fresh.db_url, name="victim")
    fresh.client(key=secret).chat.completions.create(**CHAT)  # cached as valid now
    kid = key_id_of(fresh, secret)
    change(fresh, key_service.disable_key, kid)
    assert refused_within(fresh, secret, 1.0)
    change(fresh, key_service.enable_key, kid)
    time.sleep(0.5)
    fresh.client(key=secret).chat.completions.create(**CHAT)
    rotated = change(fresh, key_service.rotate_key, kid)
    new_secret = rotated.key  # type: ignore[attr-defined]
    assert refused_within(fresh, secret, 1.0)
    fresh.client(key=new_secret).chat.completions.create(**CHAT)


@pytest.mark.postgres
def test_whole_path_on_postgresql(tmp_path: Path, pg_url_sync: str) -> None:
    stack = Stack(tmp_path, database_url=pg_url_sync)
    try:
        client = stack.client()
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        list(client.chat.completions.create(**CHAT, stream=True))  # type: ignore[call-overload]
        rows = stack.usage_rows(2)
        assert [r["total_tokens"] for r in rows] == [14, 16]
        assert [r["stream"] for r in rows] == [False, True]
    finally:
        stack.stop()
