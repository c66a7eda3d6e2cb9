"""Cost of stripping `,"usage":null` from the chunks of a client that did not ask for usage:
`SSETracker.feed` on one typical chat chunk, keeping (as for a client that asked) against
stripping. Best and median of 9 rounds. `python bench/null_usage_micro.py`."""

from __future__ import annotations

import timeit

import orjson

from tollway.gateway.sse import SSETracker

CHUNK = {
    "id": "chatcmpl-abc",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_x",
    "choices": [
        {"index": 0, "delta": {"content": "Hello "}, "logprobs": None, "finish_reason": None}
    ],
    "usage": None,
}


def main() -> None:
    event = b"data: " + orjson.dumps(CHUNK) + b"\n\n"
    n = 200_000
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(9):
        for strip in (False, True):
            feed = SSETracker(hide_usage_chunk=strip).feed
            results[strip].append(timeit.timeit(lambda f=feed: f(event), number=n) / n * 1e9)
    for strip, times in results.items():
        times.sort()
        name = "strip" if strip else "keep"
        print(f"{name}: best {times[0]:.0f} ns, median {times[4]:.0f} ns an event")


if __name__ == "__main__":
    main()
