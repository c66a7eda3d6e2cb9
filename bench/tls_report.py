"""bench/tls.py's runs turned into its table and the checks against the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from report import _md, _num
from targets import Target

TLS_COST_TARGET = 0.10  # Tollway over TLS within 10 % of the same hop over plain HTTP
PORTKEY_RATIO_TARGET = 6.0  # Tollway over TLS at least 6x Portkey over TLS


@dataclass
class TlsRun:
    """One measured wrk run of one target (one round)."""

    target: str
    mode: str
    concurrency: int
    round: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s: float
    peak_rss_mb: float
    conns_run: int  # connections nginx accepted during the measured run
    conns_with_warmup: int  # the same from before the warm-up
    conns_steady: int | None  # ... in the run's middle (0.5 s from either end)
    steady_requests: int | None  # requests answered in that middle (req/s x its length)
    loadavg: str
    error_sample: str = ""


@dataclass
class TlsRow:
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
    cpu_ms_per_req: float | None
    peak_rss_mb: float
    conns_per_1k: float | None  # new upstream connections (TLS: handshakes) per 1,000 requests
    steady_per_1k: float | None  # the same in the run's middle
    conns_with_warmup: int  # the largest over rounds
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    error_sample: str = ""


def is_tls(target: str) -> bool:
    return target.endswith("-tls")


def aggregate(runs: list[TlsRun]) -> list[TlsRow]:
    groups: dict[tuple[str, str, int], list[TlsRun]] = {}
    for run in runs:
        groups.setdefault((run.target, run.mode, run.concurrency), []).append(run)
    rows = []
    for (target, mode, conc), rs in groups.items():
        cpu = [r.cpu_s * 1000 / r.requests for r in rs if r.requests]
        conns = [r.conns_run * 1000 / r.requests for r in rs if r.requests]
        steady = [
            r.conns_steady * 1000 / r.steady_requests
            for r in rs
            if r.conns_steady is not None and r.steady_requests
        ]
        rows.append(
            TlsRow(
                target=target,
                mode=mode,
                concurrency=conc,
                rounds=len(rs),
                requests=sum(r.requests for r in rs),
                errors=sum(r.errors for r in rs),
                rps=statistics.median(r.rps for r in rs),
                p50_ms=statistics.median(r.p50_ms for r in rs),
                p99_ms=statistics.median(r.p99_ms for r in rs),
                cpu_ms_per_req=statistics.median(cpu) if cpu else None,
                peak_rss_mb=max(r.peak_rss_mb for r in rs),
                conns_per_1k=statistics.median(conns) if conns else None,
                steady_per_1k=statistics.median(steady) if steady else None,
                conns_with_warmup=max(r.conns_with_warmup for r in rs),
                error_sample=next((r.error_sample for r in rs if r.error_sample), ""),
            )
        )
    # Added latency: over the upstream the hop used (direct-tls for the -tls targets).
    base = {(r.target, r.mode, r.concurrency): r for r in rows if r.target.startswith("direct")}
    for row in rows:
        direct = "direct-tls" if is_tls(row.target) else "direct"
        ref = base.get((direct, row.mode, row.concurrency))
        if ref is not None and not row.target.startswith("direct") and row.requests:
            row.added_p50_ms = row.p50_ms - ref.p50_ms
            row.added_p99_ms = row.p99_ms - ref.p99_ms
    return rows


def table(targets: list[Target], rows: list[TlsRow]) -> str:
    header = [
        "target",
        "upstream",
        "mode",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "CPU ms/req",
        "peak RSS MB",
        "new conns /1k req steady",
        "/1k req whole run",
        "conns incl. warm-up",
        "errors",
    ]
    lines = []
    for t in targets:
        scheme = "https" if is_tls(t.name) else "http"
        if t.skipped:
            lines.append([t.name, scheme, "-", "-", f"not run: {t.note}", *[""] * 10])
            continue
        for row in (r for r in rows if r.target == t.name):
            lines.append(
                [
                    t.name,
                    scheme,
                    row.mode,
                    str(row.concurrency),
                    f"{row.rps:,.0f}",
                    f"{row.p50_ms:.2f}",
                    f"{row.p99_ms:.2f}",
                    _num(row.added_p50_ms, "+.2f"),
                    _num(row.added_p99_ms, "+.2f"),
                    _num(row.cpu_ms_per_req, ".3f"),
                    f"{row.peak_rss_mb:.0f}",
                    _num(row.steady_per_1k, ".2f"),
                    _num(row.conns_per_1k, ".2f"),
                    str(row.conns_with_warmup),
                    str(row.errors),
                ]
            )
    return _md(header, lines, left=3)


def checks(rows: list[TlsRow]) -> str:
    """What TLS costs each hop, Tollway over TLS against Portkey over TLS, and reuse."""
    at = {(r.target, r.mode, r.concurrency): r for r in rows}
    lines = []
    for (target, mode, conc), row in sorted(at.items()):
        if not is_tls(target) or target.startswith("direct"):
            continue
        plain = at.get((target[: -len("-tls")], mode, conc))
        if plain is not None and plain.rps:
            cost = 1 - row.rps / plain.rps
            verdict = ""
            if target == "tollway-tls":
                verdict = " (target <= 10 %: " + ("met)" if cost <= TLS_COST_TARGET else "NOT met)")
            lines.append(
                f"- `{target}` {mode} c={conc}: {row.rps:,.0f} req/s against {plain.rps:,.0f} "
                f"over plain HTTP, TLS costs {cost:+.1%}{verdict}"
            )
    for (target, mode, conc), row in sorted(at.items()):
        peer = at.get(("portkey-tls", mode, conc))
        if target == "tollway-tls" and peer is not None and peer.rps:
            ratio = row.rps / peer.rps
            met = "met" if ratio >= PORTKEY_RATIO_TARGET else "NOT met"
            lines.append(
                f"- `tollway-tls` / `portkey-tls` {mode} c={conc}: {ratio:.1f}x "
                f"(target >= {PORTKEY_RATIO_TARGET:g}x: {met})"
            )
    for (target, mode, conc), row in sorted(at.items()):
        if is_tls(target) and not target.startswith("direct") and row.steady_per_1k is not None:
            lines.append(
                f"- `{target}` {mode} c={conc}: {row.steady_per_1k:.2f} TLS handshakes per "
                f"1,000 requests in steady state; {_num(row.conns_per_1k, '.2f')} over the "
                f"whole run, {row.conns_with_warmup} new connections counting its warm-up"
            )
    return "Checks:\n\n" + "\n".join(lines) if lines else ""
