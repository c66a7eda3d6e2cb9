"""The limits' pipelined Redis connection: replies matched in order under concurrency, a
script the server forgot, database and credentials from the redis-py client, and failures
(timeout, dropped connection, garbage) that fail the waiting calls and recover on the next."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway.gateway.limiting import connect
from tollway.gateway.limiting.redis_pipe import ScriptPipe, encode

from .limits_support import REDIS_URL, require_redis, unique_prefix

ECHO = "return {ARGV[1], redis.call('INCR', KEYS[1])}"
ECHO_SHA = hashlib.sha1(ECHO.encode()).hexdigest()


@pytest.fixture
def live() -> None:
    require_redis()


def test_encode_is_resp() -> None:
    assert encode(b"GET", b"k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert encode(b"SET", b"", b"\r\n") == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$2\r\n\r\n\r\n"


async def test_concurrent_calls_get_their_own_replies_in_order(live: None) -> None:
    key = unique_prefix()
    pipe = ScriptPipe.like(connect(REDIS_URL))
    try:
        replies = await asyncio.gather(
            *(pipe.run(ECHO_SHA, ECHO, [key], [f"call-{n}"]) for n in range(300))
        )
        assert [r[0] for r in replies] == [f"call-{n}".encode() for n in range(300)]
        assert sorted(r[1] for r in replies) == list(range(1, 301))  # each INCR once
    finally:
        await pipe.close()
        redis.Redis.from_url(REDIS_URL).delete(key)


async def test_a_forgotten_script_is_sent_whole_once(live: None) -> None:
    key = unique_prefix()
    pipe = ScriptPipe.like(connect(REDIS_URL))
    try:
        redis.Redis.from_url(REDIS_URL).script_flush()
        assert (await pipe.run(ECHO_SHA, ECHO, [key], ["a"]))[1] == 1
        assert (await pipe.run(ECHO_SHA, ECHO, [key], ["b"]))[1] == 2  # cached again
        with pytest.raises(ResponseError):
            await pipe.run("0" * 40, "return redis.call('NOPE')", [key], [])
    finally:
        await pipe.close()
        redis.Redis.from_url(REDIS_URL).delete(key)


async def test_database_comes_from_the_client_url(live: None) -> None:
    key = unique_prefix()
    pipe = ScriptPipe.like(connect(REDIS_URL.rsplit("/", 1)[0] + "/7", timeout=0.3))
    assert (pipe.db, pipe.timeout) == (7, 0.3)
    try:
        await pipe.run(ECHO_SHA, ECHO, [key], ["x"])
        other = redis.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/7")
        assert other.get(key) == b"1"
        assert redis.Redis.from_url(REDIS_URL).get(key) is None
        other.delete(key)
    finally:
        await pipe.close()


async def test_refused_credentials_fail_the_call_cleanly(live: None) -> None:
    pipe = ScriptPipe.like(connect("redis://:wrong-password@127.0.0.1:6379/0"))
    with pytest.raises(RedisConnectionError, match="connection setup") as err:
        await pipe.run(ECHO_SHA, ECHO, ["k"], ["x"])
    assert "wrong-password" not in str(err.value)
    await pipe.close()


async def test_a_dropped_connection_fails_waiters_and_the_next_call_reconnects(
    live: None,
) -> None:
    key = unique_prefix()
    pipe = ScriptPipe.like(connect(REDIS_URL))
    try:
        await pipe.run(ECHO_SHA, ECHO, [key], ["1"])
        first = pipe._proto
        assert first is not None and first.transport is not None
        slow = asyncio.ensure_future(
            pipe.run(hashlib.sha1(b"x").hexdigest(), "return redis.call('GET', 'x')", [], [])
        )
        first.transport.abort()
        with pytest.raises(RedisConnectionError):
            await slow
        assert (await pipe.run(ECHO_SHA, ECHO, [key], ["2"]))[1] == 2
        assert pipe._proto is not first
    finally:
        await pipe.close()
        redis.Redis.from_url(REDIS_URL).delete(key)


async def _silent_server(reply: bytes = b"") -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        if reply:
            writer.write(reply)
            await writer.drain()
        await asyncio.sleep(5)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_server_that_never_answers_times_out() -> None:
    server, port = await _silent_server()
    pipe = ScriptPipe(port=port, timeout=0.2)
    try:
        calls = [pipe.run(ECHO_SHA, ECHO, ["k"], [str(n)]) for n in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results)
        assert pipe._proto is None  # out of step for good: never reused
    finally:
        await pipe.close()
        server.close()


async def test_garbage_from_the_server_is_a_connection_error() -> None:
    server, port = await _silent_server(b"?what\r\n")
    pipe = ScriptPipe(port=port, timeout=1)
    try:
        with pytest.raises(RedisConnectionError, match="protocol error"):
            await pipe.run(ECHO_SHA, ECHO, ["k"], ["x"])
    finally:
        await pipe.close()
        server.close()


async def test_unreachable_server_is_a_connection_error() -> None:
    from .servers import free_port

    pipe = ScriptPipe(port=free_port(), timeout=0.5)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await pipe.run(ECHO_SHA, ECHO, ["k"], ["x"])
    await pipe.close()
