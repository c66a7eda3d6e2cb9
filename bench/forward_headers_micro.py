"""Cost of building one upstream request's header lines (`Relay.forward_headers`), with the
headers the openai SDK sends (organization and project included).

    .venv/bin/python bench/forward_headers_micro.py [-n 200000] [--rounds 9]

Prints the best and median of `rounds` timings, in microseconds per call: the version before
per-upstream header policies (`legacy`, kept here as the reference), an upstream with only a
key, and one with configured `headers:` and `pass_headers:`. The rounds of all three are
interleaved, so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from tollway.gateway.asgi import Headers
from tollway.gateway.relay import Relay
from tollway.upstreams.headers import DROP_REQUEST
from tollway.upstreams.target import Upstream

Forward = Callable[[Headers, Upstream, str], bytes]
LEGACY_DROP = DROP_REQUEST - {b"x-goog-api-key"}


def legacy_forward_headers(headers: Headers, up: Upstream, request_id: str) -> bytes:
    """forward_headers as it was: one module-wide drop set, three lines appended."""
    lines = [name + b": " + value + b"\r\n" for name, value in headers if name not in LEGACY_DROP]
    if up.auth_header:
        lines.append(b"authorization: " + up.auth_header + b"\r\n")
    lines.append(b"x-request-id: " + request_id.encode() + b"\r\n")
    lines.append(b"accept-encoding: identity\r\n")
    return b"".join(lines)


# What the openai SDK (python, 2.x) sends on a chat completion, lower-cased as ASGI gives it.
SDK_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"user-agent", b"OpenAI/Python 2.8.1"),
    (b"x-stainless-lang", b"python"),
    (b"x-stainless-package-version", b"2.8.1"),
    (b"x-stainless-os", b"Linux"),
    (b"x-stainless-arch", b"x64"),
    (b"x-stainless-runtime", b"CPython"),
    (b"x-stainless-runtime-version", b"3.12.3"),
    (b"authorization", b"Bearer tw-0123456789abcdef0123456789abcdef"),
    (b"openai-organization", b"org-client"),
    (b"openai-project", b"proj_client"),
    (b"x-stainless-async", b"false"),
    (b"x-stainless-retry-count", b"0"),
    (b"x-stainless-read-timeout", b"600"),
    (b"content-length", b"71"),
]


def once(forward: Forward, up: Upstream, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        forward(SDK_HEADERS, up, "req-0123456789abcdef")
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    plain = Upstream("plain", "https://api.example.com/v1", api_key="sk-upstream-0123456789")
    configured = Upstream(
        "configured",
        "https://openrouter.example.com/api/v1",
        api_key="sk-upstream-0123456789",
        headers={"HTTP-Referer": "https://gw.example.com", "X-Title": "Tollway"},
        pass_headers=frozenset({"OpenAI-Project"}),
    )
    cases: list[tuple[str, Forward, Upstream]] = [
        ("legacy", legacy_forward_headers, plain),
        ("key only", Relay.forward_headers, plain),
        ("headers+pass", Relay.forward_headers, configured),
    ]
    results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.rounds):
        for name, forward, up in cases:
            results[name].append(once(forward, up, args.n))
    for name, times in results.items():
        print(
            f"{name:13} best {min(times):6.3f} µs   median {statistics.median(times):6.3f} µs"
            f"   (n={args.n}, {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
