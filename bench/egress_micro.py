"""Cost of sending one request to a plain-HTTP upstream, minus the network: `Relay._request`
(body rewrite, header lines, pool bookkeeping) and `UpstreamClient.request` (origin lookup,
request head, pool take), with a stand-in connection whose answer is already there.

    .venv/bin/python bench/egress_micro.py [-n 100000] [--rounds 9]

Run it with PYTHONPATH pointing at another checkout to compare two versions of the code on
the same machine (what the TLS/proxy/Azure work was measured with).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import tollway
from tollway.gateway.body import inspect
from tollway.gateway.relay import Relay
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

BODY = b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer tw-client"),
    (b"user-agent", b"OpenAI/Python 2.0"),
    (b"accept", b"application/json"),
]


class _Answer:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._head: asyncio.Future[None] = loop.create_future()
        self._head.set_result(None)


class _Conn:
    closed = False
    reused = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer = _Answer(loop)

    def send(self, head: bytes, body: bytes, head_only: bool) -> Any:
        return self.answer


async def one_round(n: int) -> float:
    loop = asyncio.get_running_loop()
    up = Upstream("u", "http://127.0.0.1:9/v1", "sk-upstream", models=frozenset({"gpt-test"}))
    pool = Pool()
    pool.replace([up])
    relay = Relay(pool, 5.0, 5.0, 3)
    conn = _Conn(loop)
    relay.client._take_idle = lambda key: conn  # type: ignore[assignment,method-assign,return-value]
    info = inspect("/v1/chat/completions", b"application/json", BODY)
    started = time.perf_counter()
    for _ in range(n):
        await relay._request(
            b"POST", b"/chat/completions", HEADERS, BODY, info, up, "gpt-test", "req-1"
        )
    elapsed = time.perf_counter() - started
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    results = [asyncio.run(one_round(args.n)) for _ in range(args.rounds)]
    print(f"{tollway.__file__}")
    print(f"Relay._request: best {min(results):.2f} µs, median {statistics.median(results):.2f} µs")


if __name__ == "__main__":
    main()
