"""What metrics, the request log and tracing cost per request: each observer called on
realistic usage events (one per loop turn, as at concurrency 1, and 16 per turn, as under
load), CPU time on the calling thread, best of 5 rounds.

    .venv/bin/python bench/observe_micro.py [-n 50000]

The request log's writer thread builds the lines and writes them to /dev/null beside the event
loop; "with other threads" is the whole process's CPU, counted once that thread has finished.
Tracing is measured only when the `otel` extra is installed, with an exporter that drops the
batches (export happens in the SDK's thread; span building and the batch processor's queue put
are on the loop).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable

from tollway.core.types import UsageEvent
from tollway.gateway.usage import UsageSink
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream


def event(i: int) -> UsageEvent:
    return UsageEvent(
        time.time(), f"{i:032x}", 1, "POST", "/v1/chat/completions", model="gpt-4o-mini",
        upstream="openai-1", upstream_model="gpt-4o-mini", status=200, stream=i % 2 == 0,
        prompt_tokens=12, completion_tokens=40, total_tokens=52, cost_usd=0.00003,
        latency_ms=123.4, ttft_ms=80.1 if i % 2 == 0 else None, attempts=1,
    )  # fmt: skip


async def never(batch: list[UsageEvent]) -> None:
    raise RuntimeError("not measured")


def measure(
    name: str,
    observe: Callable[[list[UsageEvent]], None],
    n: int,
    per_turn: int,
    drain: Callable[[], None] | None = None,
) -> None:
    events = [event(i) for i in range(n)]
    turns = [events[i : i + per_turn] for i in range(0, n, per_turn)]
    best = float("inf")
    best_proc = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        p0 = time.process_time()
        for turn in turns:
            observe(turn)
        best = min(best, time.thread_time() - t0)
        if drain is not None:  # the writer thread's share (it builds the lines) counts too
            drain()
        best_proc = min(best_proc, time.process_time() - p0)
    print(
        f"{name:<28} {per_turn:>3}/turn  {best / n * 1e6:6.2f} µs/request on the loop"
        f"  ({best_proc / n * 1e6:6.2f} µs with other threads)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=50_000)
    args = parser.parse_args()
    pool = Pool(
        [Upstream("openai-1", "https://api.example.com/v1", "k", frozenset({"gpt-4o-mini"}))]
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from tollway.observe.metrics import Metrics
    from tollway.observe.request_log import RequestLog

    metrics = Metrics(pool, UsageSink(never))
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    text_log = RequestLog("text", "info", devnull)
    json_log = RequestLog("json", "info", devnull)
    tracing = None
    try:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        from tollway.observe.tracing import Tracing

        class Drop(SpanExporter):
            def export(self, spans: object) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tracing = Tracing(pool, None, "bench", exporter=Drop())
    except ImportError:
        print("tracing: not measured (pip install -e '.[otel]')")

    def drain() -> None:  # close() returns once the thread wrote everything queued
        for log in (text_log, json_log):
            log.close()
            log._thread = threading.Thread(target=log._write, daemon=True)
            log._thread.start()

    for per_turn in (1, 16):
        measure("metrics", metrics.observe, args.n, per_turn)
        measure("request log (text)", text_log.observe, args.n, per_turn, drain)
        measure("request log (json)", json_log.observe, args.n, per_turn, drain)

        def both(events: list[UsageEvent]) -> None:
            metrics.observe(events)
            text_log.observe(events)

        measure("metrics + request log (text)", both, args.n, per_turn, drain)
        if tracing is not None:
            measure("tracing", tracing.observe, args.n, per_turn)
    text_log.close()
    json_log.close()
    if tracing is not None:
        tracing.close()


if __name__ == "__main__":
    main()
