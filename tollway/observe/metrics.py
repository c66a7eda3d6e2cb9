"""Prometheus metrics, fed from the usage events (a sink observer, called once per loop turn
after the responses went out) and, once a second, from the pool's and the sink's own counters.
Nothing here runs inside a request.

Label values are bounded: a model is named only if an upstream or a fallback names it (else
"other"), upstreams are the configured ones, error types a fixed list. With several workers
(`PROMETHEUS_MULTIPROC_DIR`, set by `tollway serve`), prometheus-client keeps every value in a
per-process file and `/metrics` sums them; each instance exposes its own totals."""

from __future__ import annotations

import contextlib
import glob
import math
import os
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tollway.core.types import UsageEvent
from tollway.gateway.usage import UsageSink
from tollway.upstreams.pool import Pool

from .classify import LIMIT_REFUSALS, error_class_of, error_label, status_class

MAX_MODELS = 1000  # more distinct model names than this: the rest are "other"
MAX_SERIES = 10_000  # cached event kinds (client-chosen model names): beyond, start afresh
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(
        self,
        pool: Pool,
        sink: UsageSink,
        refusals: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.pool = pool
        self.sink = sink
        self._refusals = refusals  # unauthenticated requests refused, by code (no event)
        self.mp_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=False)
        if self.mp_dir is not None:
            _forget_dead_processes(self.mp_dir)
            MultiProcessCollector(self.registry, path=self.mp_dir)  # type: ignore[no-untyped-call]
        r = None if self.mp_dir is not None else self.registry  # files are read instead

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...], mode: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r, multiprocess_mode=mode)  # type: ignore[arg-type]

        self.requests = counter(
            "tollway_requests",
            "Requests with a valid key, by model, upstream, status class and error class.",
            ("model", "upstream", "status_class", "error_class"),
        )
        self.errors = counter(
            "tollway_request_errors",
            "Failed requests by error class (client, upstream, gateway) and error type.",
            ("error_class", "error_type"),
        )
        self.unauthenticated = counter(
            "tollway_unauthenticated_refusals",
            "Requests refused before a key was known (invalid, expired, disabled, throttled).",
            ("code",),
        )
        self.latency = Histogram(
            "tollway_request_duration_seconds",
            "Time from the request's arrival to its last byte, by model.",
            ("model",),
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "tollway_time_to_first_token_seconds",
            "Streams: time from the upstream's answer to the first event relayed, by model.",
            ("model",),
            registry=r,
            buckets=TTFT_BUCKETS,
        )
        self.tokens = counter(
            "tollway_tokens",
            "Tokens reported by upstreams, by model, upstream and kind (input, output).",
            ("model", "upstream", "kind"),
        )
        self.cost = counter(
            "tollway_cost_usd",
            "Recorded cost in USD, by model and upstream.",
            ("model", "upstream"),
        )
        self.limit_refusals = counter(
            "tollway_limit_refusals",
            "Requests refused by the key's limits, by reason.",
            ("reason",),
        )
        self.attempts = counter(
            "tollway_upstream_attempts", "Requests sent to each upstream.", ("upstream",)
        )
        self.failures = counter(
            "tollway_upstream_failures",
            "Failures each upstream caused (connection, timeout, 5xx, 429, key, credit).",
            ("upstream",),
        )
        self.up = gauge(
            "tollway_upstream_up",
            "1 when the upstream is in rotation and not cooling down, else 0.",
            ("upstream",),
            "livemin",
        )
        self.in_flight = gauge(
            "tollway_upstream_in_flight",
            "Requests in flight per upstream.",
            ("upstream",),
            "livesum",
        )
        self.balance = gauge(
            "tollway_upstream_balance_usd",
            "Remaining credit of the upstream's account, when known.",
            ("upstream",),
            "livemax",
        )
        self.queue = gauge(
            "tollway_usage_queue_depth", "Usage events not yet in the database.", (), "livesum"
        )
        self.spool_ok = gauge(
            "tollway_usage_spool_healthy", "1 while the usage spool can be written.", (), "livemin"
        )
        self.spool_errors = counter("tollway_usage_spool_errors", "Failed spool writes.")
        self.written = counter("tollway_usage_written", "Usage events written to the database.")
        self.dropped = counter("tollway_usage_dropped", "Usage events dropped from memory.")
        self.write_seconds = Histogram(
            "tollway_usage_write_seconds",
            "Duration of one usage batch write, by outcome.",
            ("outcome",),
            registry=r,
            buckets=WRITE_BUCKETS,
        )
        self._known: frozenset[str] = frozenset()
        self._children: dict[tuple[Any, ...], Any] = {}
        # (model, upstream, status, error type) -> the children such an event counts in
        self._series: dict[tuple[str | None, str | None, int, str | None], tuple[Any, ...]] = {}
        self._seen: dict[tuple[str, str], float] = {}  # last totals read from pool and sink
        self._write_ok = self.write_seconds.labels("ok")
        self._write_failed = self.write_seconds.labels("failed")
        sink.add_observer(self.observe)
        sink.on_write = self.on_write
        self.refresh()

    # -- per usage event (a loop turn's worth at a time) ---------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, events: list[UsageEvent]) -> None:
        """A turn's events are summed per (model, upstream, status, error) first, then each
        sum reaches its prometheus children once: one `inc` per series per turn, not one per
        event and series (the lock and call overhead was most of the cost)."""
        turn: dict[tuple[str | None, str | None, int, str | None], list[Any]] = {}
        for e in events:
            key = (e.model, e.upstream, e.status, e.error_type)
            acc = turn.get(key)
            if acc is None:
                acc = turn[key] = [0, 0, 0, 0.0, [], []]
            acc[0] += 1
            if e.prompt_tokens:
                acc[1] += e.prompt_tokens
            if e.completion_tokens:
                acc[2] += e.completion_tokens
            if e.cost_usd:
                acc[3] += e.cost_usd
            if e.latency_ms is not None:
                acc[4].append(e.latency_ms / 1000.0)
            if e.ttft_ms is not None:
                acc[5].append(e.ttft_ms / 1000.0)
        series = self._series
        for key, (n, prompt, completion, cost, latencies, ttfts) in turn.items():
            found = series.get(key)
            if found is None:
                if len(series) >= MAX_SERIES:
                    series.clear()
                found = series[key] = self._resolve(*key)
            requests, errors, refusals, latency, ttft, tokens_in, tokens_out, cost_child = found
            requests.inc(n)
            if errors is not None:
                errors.inc(n)
                if refusals is not None:
                    refusals.inc(n)
            if latencies:
                _observe_all(latency, latencies)
            if ttfts:
                _observe_all(ttft, ttfts)
            if prompt:
                tokens_in.inc(prompt)
            if completion:
                tokens_out.inc(completion)
            if cost:
                cost_child.inc(cost)

    def _resolve(
        self, name: str | None, upstream_name: str | None, status: int, error_type: str | None
    ) -> tuple[Any, ...]:
        """The children one kind of event counts in (cached per kind until the known models
        change)."""
        model = name if name in self._known else ("none" if name is None else "other")
        upstream = upstream_name or "none"
        klass = error_class_of(status, error_type)
        child = self._child
        errors = refusals = None
        if klass != "none":
            errors = child(self.errors, klass, error_label(error_type))
            if error_type in LIMIT_REFUSALS:
                refusals = child(self.limit_refusals, error_type)
        return (
            child(self.requests, model, upstream, status_class(status), klass),
            errors,
            refusals,
            child(self.latency, model),
            child(self.ttft, model),
            child(self.tokens, model, upstream, "input"),
            child(self.tokens, model, upstream, "output"),
            child(self.cost, model, upstream),
        )

    def on_write(self, events: int, seconds: float, ok: bool) -> None:
        (self._write_ok if ok else self._write_failed).observe(seconds)

    # -- once a second, and before a scrape ---------------------------------------------------

    def refresh(self) -> None:
        pool = self.pool
        names: set[str] = set(pool.policy.fallbacks)
        for up in pool.upstreams:
            names |= up.public_models()
        known = frozenset(sorted(names)[:MAX_MODELS])
        if known != self._known:
            self._known = known
            self._series.clear()  # a model's label may have changed
        now = pool.clock()
        for up in pool.upstreams:
            name = up.name
            healthy = pool.in_rotation(up, now) and up.cooldown_until <= now
            self._child(self.up, name).set(1.0 if healthy else 0.0)
            self._child(self.in_flight, name).set(up.in_flight)
            balance = up.acct.available()
            if balance is not None:
                self._child(self.balance, name).set(balance)
            self._add(self._child(self.attempts, name), ("attempts", name), up.requests)
            self._add(self._child(self.failures, name), ("failures", name), up.failures)
        sink = self.sink
        self.queue.set(sink.pending())
        self.spool_ok.set(1.0 if sink.healthy else 0.0)
        self._add(self.spool_errors, ("spool_errors", ""), sink.spool_errors)
        self._add(self.written, ("written", ""), sink.written)
        self._add(self.dropped, ("dropped", ""), sink.dropped)
        if self._refusals is not None:
            for code, count in list(self._refusals().items()):
                self._add(self._child(self.unauthenticated, code), ("refused", code), count)

    def _add(self, counter: Any, key: tuple[str, str], total: float) -> None:
        """Counters from running totals kept elsewhere: add what is new since the last look
        (a total that went down was reset, e.g. an upstream re-created: all of it is new)."""
        last = self._seen.get(key, 0.0)
        delta = total - last if total >= last else total
        self._seen[key] = total
        if delta > 0:
            counter.inc(delta)

    def render(self) -> bytes:
        """The text exposition (reads every worker's files in multiprocess mode: call it in a
        thread)."""
        return generate_latest(self.registry)

    def close(self) -> None:
        """This process's live gauges stop counting (multiprocess mode)."""
        if self.mp_dir is not None:
            with contextlib.suppress(OSError):
                mark_process_dead(os.getpid(), self.mp_dir)  # type: ignore[no-untyped-call]


def _observe_all(histogram: Any, values: list[float]) -> None:
    """`histogram.observe(v)` for each value, with one `inc` per bucket hit and one for the
    sum (prometheus-client's own bucketing, by bisection: the first bound >= the value)."""
    if len(values) == 1:
        histogram.observe(values[0])
        return
    bounds = histogram._upper_bounds
    hits: dict[int, int] = {}
    for v in values:
        i = bisect_left(bounds, v)
        hits[i] = hits.get(i, 0) + 1
    buckets = histogram._buckets
    for i, count in hits.items():
        buckets[i].inc(count)
    histogram._sum.inc(math.fsum(values))


def _forget_dead_processes(path: str) -> None:
    """Live gauges of workers that died without closing (a crash) stop counting."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(file).rsplit("_", 1)[-1][:-3]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
