"""Turning runs into the one table (markdown) and the JSON record."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from first_byte import FirstByte
from targets import Target

TOLLWAY_PREFIX = "tollway"
PEERS = ("portkey", "litellm", "litellm-w2", "bare", "bare-w2", "bare-aiohttp", "nginx")


@dataclass
class Run:
    """One measured wrk run of one target (one round)."""

    target: str
    mode: str
    concurrency: int
    round: int
    requests: int
    errors: int  # non-2xx + socket errors + timeouts
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s: float  # CPU seconds of the target's process tree during the run
    peak_rss_mb: float
    loadavg: str  # /proc/loadavg before the run
    error_sample: str = ""  # what a failing answer said (second look), when errors > 0


@dataclass
class Row:
    """The median over rounds of one target, mode and concurrency."""

    target: str
    mode: str
    concurrency: int
    rounds: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s_per_1k: float | None
    peak_rss_mb: float
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    error_sample: str = ""


def aggregate(runs: list[Run]) -> list[Row]:
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.target, run.mode, run.concurrency), []).append(run)
    rows = []
    for (target, mode, conc), rs in groups.items():
        per_1k = [r.cpu_s / (r.requests / 1000) for r in rs if r.requests]
        rows.append(
            Row(
                target=target,
                mode=mode,
                concurrency=conc,
                rounds=len(rs),
                requests=sum(r.requests for r in rs),
                errors=sum(r.errors for r in rs),
                rps=statistics.median(r.rps for r in rs),
                p50_ms=statistics.median(r.p50_ms for r in rs),
                p99_ms=statistics.median(r.p99_ms for r in rs),
                cpu_s_per_1k=statistics.median(per_1k) if per_1k else None,
                peak_rss_mb=max(r.peak_rss_mb for r in rs),
                error_sample=next((r.error_sample for r in rs if r.error_sample), ""),
            )
        )
    direct = {(r.mode, r.concurrency): r for r in rows if r.target == "direct"}
    for row in rows:
        base = direct.get((row.mode, row.concurrency))
        if base is not None and row.target != "direct" and row.requests:
            row.added_p50_ms = row.p50_ms - base.p50_ms
            row.added_p99_ms = row.p99_ms - base.p99_ms
    return rows


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _md(header: list[str], lines: Iterable[list[str]], left: int = 2) -> str:
    rule = ["---" if i < left else "---:" for i in range(len(header))]
    out = [header, rule, *lines]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in out)


def table(targets: list[Target], rows: list[Row]) -> str:
    header = [
        "target",
        "mode",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "CPU s/1k req",
        "peak RSS MB",
        "cold start s",
        "errors",
    ]
    lines = []
    for t in targets:
        if t.skipped:  # the reason stands where its req/s would
            lines.append([t.name, "-", "-", f"not run: {t.note}", *[""] * (len(header) - 4)])
            continue
        first = True
        for row in (r for r in rows if r.target == t.name):
            answered = row.requests > 0  # else wrk's latencies are zeros, not figures
            lines.append(
                [
                    t.name,
                    row.mode,
                    str(row.concurrency),
                    f"{row.rps:,.0f}",
                    f"{row.p50_ms:.2f}" if answered else "none done",
                    f"{row.p99_ms:.2f}" if answered else "",
                    _num(row.added_p50_ms, "+.2f"),
                    _num(row.added_p99_ms, "+.2f"),
                    _num(row.cpu_s_per_1k, ".3f"),
                    f"{row.peak_rss_mb:.0f}",
                    _num(t.cold_start_s, ".2f") if first else "",
                    str(row.errors),
                ]
            )
            first = False
    return _md(header, lines)


def notes(targets: list[Target], rows: list[Row]) -> str:
    lines = [f"- `{t.name}`: {'not run: ' if t.skipped else ''}{t.note}" for t in targets if t.note]
    lines += [
        f"- errors of `{r.target}` {r.mode} c={r.concurrency}: {r.error_sample}"
        for r in rows
        if r.error_sample
    ]
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    """Each Tollway target's req/s over each reference's, at the highest concurrency measured:
    one line per pair, one column per mode."""
    if not rows:
        return ""
    top = max(r.concurrency for r in rows)
    at = {(r.target, r.mode): r for r in rows if r.concurrency == top}
    modes = sorted({r.mode for r in rows})
    ours = sorted({t for t, _ in at if t.startswith(TOLLWAY_PREFIX)})
    peers = [p for p in PEERS if any((p, m) in at for m in modes)]
    if not ours or not peers:
        return ""
    lines = []
    for name in ours:
        for p in peers:
            cells = [name, p]
            for m in modes:
                a, b = at.get((name, m)), at.get((p, m))
                cells.append(f"{a.rps / b.rps:.2f}x" if a and b and b.rps else "")
            lines.append(cells)
    header = ["Tollway target", "vs", *modes]
    return f"req/s ratios at concurrency {top}:\n\n" + _md(header, lines)


def summary(targets: list[Target], rows: list[Row]) -> str:
    """The headline table: one line per target and mode, req/s at every concurrency, the
    latency a hop adds with nothing queued (the lowest concurrency), CPU and memory."""
    concs = sorted({r.concurrency for r in rows})
    low, top = (concs[0], concs[-1]) if concs else (0, 0)
    header = [
        "target",
        "mode",
        *[f"req/s c={c}" for c in concs],
        f"+p50 ms c={low}",
        f"+p99 ms c={low}",
        f"CPU ms/req c={top}",
        "peak RSS MB",
        "cold start s",
        "errors",
    ]
    lines = []
    for t in targets:
        if t.skipped:
            lines.append([t.name, "-", f"not run: {t.note}", *[""] * (len(header) - 3)])
            continue
        modes = sorted({r.mode for r in rows if r.target == t.name})
        for i, mode in enumerate(modes):
            by_conc = {r.concurrency: r for r in rows if r.target == t.name and r.mode == mode}
            first, last = by_conc.get(low), by_conc.get(top)
            lines.append(
                [
                    t.name,
                    mode,
                    *[f"{by_conc[c].rps:,.0f}" if c in by_conc else "" for c in concs],
                    _num(first.added_p50_ms if first else None, "+.2f"),
                    _num(first.added_p99_ms if first else None, "+.2f"),
                    _num(last.cpu_s_per_1k if last else None, ".3f"),
                    f"{max(r.peak_rss_mb for r in by_conc.values()):.0f}",
                    _num(t.cold_start_s, ".2f") if i == 0 else "",
                    str(sum(r.errors for r in by_conc.values())),
                ]
            )
    return _md(header, lines)


def first_byte_table(results: list[FirstByte]) -> str:
    header = [
        "target",
        "samples",
        "first byte p50 ms",
        "first byte p99 ms",
        "first event p50 ms",
        "first event p99 ms",
        "errors",
    ]
    lines = [
        [
            r.target,
            str(r.samples),
            _num(r.first_byte_p50_ms, ".3f"),
            _num(r.first_byte_p99_ms, ".3f"),
            _num(r.first_event_p50_ms, ".3f"),
            _num(r.first_event_p99_ms, ".3f"),
            str(r.errors),
        ]
        for r in results
    ]
    return _md(header, lines, left=1)
