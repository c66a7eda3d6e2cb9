"""bench/long_streams.py's measurements: merging the load clients' results, the table, and
the checks against the targets (memory per open stream, added delay per chunk, errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from report import _md, _num
from stream_client import percentile_ms

KB_PER_STREAM_TARGET = 16.0  # RSS per open stream beyond the bare hop's
ADDED_P99_TARGET_MS = 2.0  # p99 delay per chunk over the upstream's own


@dataclass
class Shape:
    streams: int
    rate: float  # chunks per second per stream
    seconds: float  # each stream's length

    @property
    def name(self) -> str:
        return f"{self.streams}x{self.rate:g}"  # streams x chunks a second

    @property
    def chunks(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass
class Measured:
    """One target under one shape."""

    shape: str
    target: str
    streams: int
    ok: int = 0  # streams with every chunk and [DONE]
    opened: int = 0  # streams that got a 200 response head
    chunks: int = 0
    chunks_expected: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_sample: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    rss_idle_mb: float | None = None
    rss_open_mb: float | None = None  # all streams open (median of three samples)
    peak_rss_mb: float | None = None
    kb_per_stream: float | None = None
    kb_beyond_bare: float | None = None
    all_open_after_s: float | None = None  # from the first connection to all open
    target_cpu_pct: float | None = None  # of one core, over the run
    upstream_cpu_pct: float | None = None
    client_cpu_pct: float | None = None
    length_p50_s: float | None = None  # response head to end, nominally `seconds`
    head_p50_ms: float | None = None  # connect to response head (a gateway behind shows here)
    head_max_ms: float | None = None
    peak_chunks_s: int | None = None  # the busiest second's chunks (nominal: streams x rate)
    length_max_s: float | None = None
    wall_s: float = 0.0
    # Per second from the load's start: [chunks received, largest delay ms].
    per_second: dict[int, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def merge_clients(m: Measured, results: list[dict[str, Any]], expected_chunks: int) -> None:
    """Fold the load clients' RESULT lines into `m`."""
    hist: dict[int, int] = {}
    for r in results:
        for b, c in r["hist"].items():
            hist[int(b)] = hist.get(int(b), 0) + c
        for why, n in r["errors"].items():
            m.errors[why] = m.errors.get(why, 0) + n
        m.error_sample = m.error_sample or r["error_sample"]
        for sec, (n, worst) in r["per_second"].items():
            cell = m.per_second.setdefault(int(sec), [0, 0.0])
            cell[0] += n
            cell[1] = max(cell[1], worst)
    m.ok = sum(r["ok"] for r in results)
    m.opened = sum(r["headed_ok"] for r in results)
    m.chunks = sum(r["chunks"] for r in results)
    m.chunks_expected = m.streams * expected_chunks
    missing = m.streams - sum(r["streams"] for r in results)  # a client that never reported
    if missing > 0:
        m.errors["no report from its load client"] = missing
    m.p50_ms = percentile_ms(hist, 0.50)
    m.p99_ms = percentile_ms(hist, 0.99)
    m.p999_ms = percentile_ms(hist, 0.999)
    m.max_ms = percentile_ms(hist, 1.0)
    lengths = [r["length_p50_s"] for r in results if r["length_p50_s"] is not None]
    m.length_p50_s = sorted(lengths)[len(lengths) // 2] if lengths else None
    maxes = [r["length_max_s"] for r in results if r["length_max_s"] is not None]
    m.length_max_s = max(maxes) if maxes else None
    heads = [r["head_p50_ms"] for r in results if r["head_p50_ms"] is not None]
    m.head_p50_ms = sorted(heads)[len(heads) // 2] if heads else None
    head_maxes = [r["head_max_ms"] for r in results if r["head_max_ms"] is not None]
    m.head_max_ms = max(head_maxes) if head_maxes else None
    m.peak_chunks_s = int(max((n for n, _ in m.per_second.values()), default=0))


def relate(rows: list[Measured]) -> None:
    """Added delay over `direct`, memory over the bare hop with as many workers."""
    by = {(r.shape, r.target): r for r in rows}
    for r in rows:
        direct = by.get((r.shape, "direct"))
        if r.target != "direct" and direct is not None and direct.p99_ms is not None:
            if r.p50_ms is not None and direct.p50_ms is not None:
                r.added_p50_ms = r.p50_ms - direct.p50_ms
            if r.p99_ms is not None:
                r.added_p99_ms = r.p99_ms - direct.p99_ms
        if r.target.startswith("tollway"):
            bare = by.get((r.shape, r.target.replace("tollway", "bare", 1)))
            if bare is not None and bare.kb_per_stream is not None and r.kb_per_stream is not None:
                r.kb_beyond_bare = r.kb_per_stream - bare.kb_per_stream


def table(rows: list[Measured]) -> str:
    header = [
        "shape",
        "target",
        "ok / streams",
        "errors",
        "chunks recv %",
        "peak chunks/s",
        "delay p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "+p99 ms",
        "RSS idle MB",
        "RSS open MB",
        "KB/stream",
        "KB beyond bare",
        "CPU % target",
        "CPU % upstream",
        "CPU % load",
        "head ms p50/max",
        "stream s p50/max",
    ]
    lines = []
    for r in rows:
        if r.note and not r.chunks_expected:
            lines.append([r.shape, r.target, f"not run: {r.note}", *[""] * (len(header) - 3)])
            continue
        recv = 100 * r.chunks / r.chunks_expected if r.chunks_expected else 0
        length = (
            f"{r.length_p50_s:.1f}/{r.length_max_s:.1f}"
            if r.length_p50_s is not None and r.length_max_s is not None
            else ""
        )
        head = (
            f"{r.head_p50_ms:.0f}/{r.head_max_ms:.0f}"
            if r.head_p50_ms is not None and r.head_max_ms is not None
            else ""
        )
        lines.append(
            [
                r.shape,
                r.target,
                f"{r.ok:,} / {r.streams:,}",
                f"{r.error_count:,}",
                f"{recv:.1f}",
                f"{r.peak_chunks_s:,}" if r.peak_chunks_s is not None else "",
                _num(r.p50_ms, ".2f"),
                _num(r.p99_ms, ".2f"),
                _num(r.p999_ms, ".2f"),
                _num(r.max_ms, ".1f"),
                _num(r.added_p99_ms, "+.2f"),
                _num(r.rss_idle_mb, ".0f"),
                _num(r.rss_open_mb, ".0f"),
                _num(r.kb_per_stream, ".1f"),
                _num(r.kb_beyond_bare, "+.1f"),
                _num(r.target_cpu_pct, ".0f"),
                _num(r.upstream_cpu_pct, ".0f"),
                _num(r.client_cpu_pct, ".0f"),
                head,
                length,
            ]
        )
    return _md(header, lines)


def checks(rows: list[Measured]) -> str:
    lines = []
    for r in rows:
        if not r.target.startswith("tollway") or not r.chunks_expected:
            continue
        parts = []
        if r.kb_beyond_bare is not None:
            ok = r.kb_beyond_bare <= KB_PER_STREAM_TARGET
            parts.append(
                f"{r.kb_beyond_bare:+.1f} KB per open stream beyond the bare hop "
                f"(target <= {KB_PER_STREAM_TARGET:g}: {'met' if ok else 'NOT met'})"
            )
        if r.added_p99_ms is not None:
            ok = r.added_p99_ms <= ADDED_P99_TARGET_MS
            parts.append(
                f"p99 added delay per chunk {r.added_p99_ms:+.2f} ms "
                f"(target <= {ADDED_P99_TARGET_MS:g}: {'met' if ok else 'NOT met'})"
            )
        parts.append(f"{r.error_count} errors" + (" (NOT met)" if r.error_count else ""))
        lines.append(f"- `{r.target}` at {r.shape}: " + "; ".join(parts))
    for r in rows:
        if r.errors:
            detail = ", ".join(f"{why}: {n:,}" for why, n in sorted(r.errors.items()))
            sample = f" (first: {r.error_sample})" if r.error_sample else ""
            lines.append(f"- errors of `{r.target}` at {r.shape}: {detail}{sample}")
    return "Checks:\n\n" + "\n".join(lines) if lines else ""
