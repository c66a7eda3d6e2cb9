"""End to end through a real Tollway with the official openai SDK."""

from __future__ import annotations

import openai
import pytest

from .fixtures_gateway import Stack


def test_chat_completion_non_streaming(fresh: Stack) -> None:
    reply = fresh.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from upstream"
    assert reply.usage is not None and reply.usage.total_tokens == 14
    seen = fresh.a.seen[-1]
    assert seen.headers["Authorization"] == f"Bearer {fresh.a.api_key}"
    assert fresh.key not in str(seen.headers)


def test_unknown_key_is_refused(fresh: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        fresh.client(key="tw-nope").models.list()
    assert err.value.code == "invalid_api_key"
