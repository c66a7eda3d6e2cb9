"""The TLS upstream benchmark: every hosted upstream is HTTPS, so measure that hop too.

    .venv/bin/python bench/tls.py [--quick] [--duration 8] [--rounds 2] [--concurrency 64]
                                  [--modes json,stream] [--targets ...] [--peers]

One nginx serves the canned answers of bench/run.py's fake upstream on a plain port and on an
HTTPS port (a certificate signed by a CA made for this run, in the temporary directory), with
`stub_status` on a third port. Each target runs twice, once to each port: the bare Python hop,
Tollway (the CA as TOLLWAY_UPSTREAM_CA_BUNDLE) and Portkey (NODE_EXTRA_CA_CERTS) when
installed; `direct` and `direct-tls` are wrk against nginx itself. wrk drives each as in
bench/run.py (A/B rounds, medians). nginx's accepted-connection count before and after each
run gives the new upstream connections per 1,000 requests: on the HTTPS port each one is one
TLS handshake, so it shows whether a hop reuses its connections. The steady-state figure is
read over the run's second half (to 0.5 s before its end): when wrk stops, it drops
connections with requests in flight, and a gateway that cancels the upstream request then
(Tollway does) opens new connections in the next run until its pool is full again (on a busy
machine, seconds: the cancellations themselves wait in the event loop). Prints a markdown
table and writes JSON under bench/results/. Everything it starts, it stops (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import peers
from load import catch_error, probe, run_wrk, write_lua
from machine import find_tools, git_rev, uptime
from nginx import nginx_cmd, tls_upstream_conf
from peer_targets import start_portkey
from proc import HOST, Processes, RssSampler, free_port, log, signals_raise, tree_cpu_seconds
from targets import UPSTREAM_KEY, Ctx, Target, spawn, start_bare, start_tollway
from tls_certs import ServerCert, make_server_cert
from tls_report import TlsRun, aggregate, checks, table

BENCH_DIR = Path(__file__).resolve().parent
ALL_TARGETS = [
    "direct",
    "direct-tls",
    "bare",
    "bare-tls",
    "tollway",
    "tollway-tls",
    "portkey",
    "portkey-tls",
]


def parse_args() -> argparse.Namespace:
    def csv(s: str) -> list[str]:
        return [x.strip() for x in s.split(",") if x.strip()]

    p = argparse.ArgumentParser(description="Each hop to a plain and to an HTTPS upstream.")
    p.add_argument("--duration", type=float, help="seconds per measured run (8; quick 2)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run")
    p.add_argument("--rounds", type=int, help="rounds, order alternating (2; quick 1)")
    p.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in csv(s)], help="connection counts (64)"
    )
    p.add_argument("--modes", default=["json", "stream"], type=csv, help="json,stream")
    p.add_argument("--targets", default=ALL_TARGETS, type=csv, help=",".join(ALL_TARGETS))
    p.add_argument("--peers", action="store_true", help="install/update Portkey first")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s runs, 1 round")
    args = p.parse_args()
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.concurrency = args.concurrency or [64]
    bad = (set(args.targets) - set(ALL_TARGETS)) | (set(args.modes) - {"json", "stream"})
    if bad:
        p.error(f"unknown target or mode: {sorted(bad)}")
    if args.rounds < 1 or args.duration < 1:
        p.error("need --rounds >= 1 and --duration >= 1")
    # Both directs: every hop's added latency is over the upstream it used.
    args.targets = ["direct", "direct-tls"] + [
        t for t in args.targets if t not in ("direct", "direct-tls")
    ]
    return args


class Upstream:
    """The nginx fake upstream: its two origins and its accepted-connection counter."""

    def __init__(self, ctx: Ctx, cert: ServerCert) -> None:
        self.tls_port, self.status_port = free_port(), free_port()
        self.plain = f"http://{HOST}:{ctx.upstream_port}"
        self.tls = f"https://{HOST}:{self.tls_port}"
        self.conf = tls_upstream_conf(
            ctx.tmp / "upstream",
            ctx.upstream_port,
            self.tls_port,
            self.status_port,
            cert.cert,
            cert.key,
        )

    def accepts(self) -> int:
        """nginx's accepted connections so far (this read's own connection included)."""
        url = f"http://{HOST}:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        # "Active connections: N\nserver accepts handled requests\n A H R\n..."
        return int(text.splitlines()[2].split()[0])


class AcceptsSampler:
    """Reads nginx's accepted-connection count every 0.25 s while a run goes on."""

    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.samples: list[tuple[float, int]] = []  # (monotonic time, accepts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.up.accepts()))
            self._stop.wait(0.25)

    def __enter__(self) -> AcceptsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def steady(self, start: float, end: float) -> tuple[int, float] | None:
        """New connections between the first sample after `start` and the last before
        `end`, without the samples' own connections; and the seconds between them."""
        inside = [(i, t, a) for i, (t, a) in enumerate(self.samples) if start <= t <= end]
        if len(inside) < 2:
            return None
        (i, t0, a0), (j, t1, a1) = inside[0], inside[-1]
        return a1 - a0 - (j - i), t1 - t0


def start_targets(
    ctx: Ctx, up: Upstream, cert: ServerCert, names: list[str], installed: dict[str, peers.Peer]
) -> list[Target]:
    ca = str(cert.ca_pem)
    started = []
    for name in names:
        log(f"starting {name}")
        tls = name.endswith("-tls")
        origin = up.tls if tls else up.plain
        if name == "direct":
            t = spawn(ctx, Target(name, up.plain, UPSTREAM_KEY), nginx_cmd(ctx.nginx, up.conf))
            t.note = "nginx fake upstream, plain HTTP (the ceiling)"
            if t.skipped:
                sys.exit(f"bench: the fake upstream did not start: {t.note}")
        elif name == "direct-tls":
            direct = started[0]
            t = Target(name, up.tls, UPSTREAM_KEY, session=direct.session)
            t.note = "the same nginx on its HTTPS port (wrk does the TLS)"
        elif name.startswith("bare"):
            t = start_bare(ctx, name, "bare", origin, cert.ca_pem if tls else None)
        elif name.startswith("tollway"):
            env = {"TOLLWAY_UPSTREAM_CA_BUNDLE": ca} if tls else None
            t = start_tollway(ctx, name, 1, None, extra_env=env, upstream=origin)
        else:
            env = {"NODE_EXTRA_CA_CERTS": ca} if tls else None
            t = start_portkey(ctx, installed.get("portkey"), name, origin, env)
        if tls and not t.skipped and name != "direct-tls":
            t.note += f"; upstream {origin}"
        if not t.skipped and t.cold_start_s is not None:
            log(f"{name} up in {t.cold_start_s:.2f}s")
        started.append(t)
    return started


def measure_one(
    ctx: Ctx,
    up: Upstream,
    wrk: str,
    t: Target,
    lua: Path,
    mode: str,
    conc: int,
    rnd: int,
    args: argparse.Namespace,
) -> TlsRun:
    url = f"{t.origin}/v1/chat/completions"
    before_warmup = up.accepts()
    if args.warmup > 0:
        run_wrk(wrk, url, lua, conc, args.warmup)
    before = up.accepts()
    loadavg = Path("/proc/loadavg").read_text().strip()
    cpu0 = tree_cpu_seconds(t.session)
    began = time.monotonic()
    with RssSampler(t.session) as rss, AcceptsSampler(up) as accepts:
        res = run_wrk(wrk, url, lua, conc, args.duration)
    cpu = tree_cpu_seconds(t.session) - cpu0
    steady = accepts.steady(began + max(0.5, res.duration_s / 2), began + res.duration_s - 0.5)
    after = up.accepts()
    if t.name in ctx.procs.dead():
        t.skipped, t.note = True, f"died during {mode} c={conc}: " + ctx.procs.log_tail(t.name, 200)
    sample = ""
    if res.non_2xx + res.socket_errors and not t.skipped:
        catcher = write_lua(lua.with_suffix(".catch.lua"), t.key, t.headers, mode == "stream", True)
        sample = catch_error(wrk, url, catcher, conc)
    return TlsRun(
        target=t.name,
        mode=mode,
        concurrency=conc,
        round=rnd,
        requests=res.requests,
        errors=res.non_2xx + res.socket_errors,
        rps=res.ok_rps,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        cpu_s=cpu,
        peak_rss_mb=rss.peak_mb,
        # Each count includes the status read that took it: one to take off per interval
        # (the sampler's reads during the run too).
        conns_run=after - before - 1 - len(accepts.samples),
        conns_with_warmup=after - before_warmup - 2 - len(accepts.samples),
        conns_steady=steady[0] if steady else None,
        steady_requests=round(res.ok_rps * steady[1]) if steady else None,
        loadavg=loadavg,
        error_sample=sample,
    )


def measure_all(
    ctx: Ctx, up: Upstream, wrk: str, targets: list[Target], args: argparse.Namespace
) -> list[TlsRun]:
    runs: list[TlsRun] = []
    luas = {
        (t.name, m): write_lua(ctx.tmp / f"{t.name}-{m}.lua", t.key, t.headers, m == "stream")
        for t in targets
        for m in args.modes
    }
    for rnd in range(args.rounds):
        order = targets if rnd % 2 == 0 else targets[::-1]  # A/B, then B/A: drift cancels
        for mode in args.modes:
            for conc in args.concurrency:
                for t in order:
                    if t.skipped:
                        continue
                    log(f"round {rnd + 1}/{args.rounds} {t.name} {mode} c={conc}")
                    lua = luas[(t.name, mode)]
                    runs.append(measure_one(ctx, up, wrk, t, lua, mode, conc, rnd, args))
    return runs


def main() -> int:
    args = parse_args()
    wrk, nginx = find_tools()
    wanted = ["portkey"] if any(t.startswith("portkey") for t in args.targets) else []
    installed = peers.install_all(wanted) if args.peers else peers.check_all(wanted)
    load_before = uptime()
    runs: list[TlsRun] = []
    with signals_raise(), tempfile.TemporaryDirectory(prefix="tollway-tls-bench-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        ctx = Ctx(procs, tmp, nginx, free_port(), free_port(), [])
        cert = make_server_cert(tmp / "pki")
        up = Upstream(ctx, cert)
        trust = ssl.create_default_context(cafile=str(cert.ca_pem))
        try:
            targets = start_targets(ctx, up, cert, args.targets, installed)
            for t in targets:
                for mode in args.modes if not t.skipped else []:
                    url = f"{t.origin}/v1/chat/completions"
                    wrong = probe(url, t.key, t.headers, mode == "stream", trust)
                    if wrong:
                        t.skipped, t.note = True, f"{mode}: {wrong}"[:200]
                        log(f"{t.name}: {t.note}")
            runs = measure_all(ctx, up, wrk, targets, args)
        finally:
            procs.stop_all()
    rows = aggregate(runs)
    load_after = uptime()
    out = [
        table(targets, rows),
        checks(rows),
        "\n".join(f"- `{t.name}`: {'not run: ' if t.skipped else ''}{t.note}" for t in targets),
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; load before: {load_before}; "
        f"after: {load_after}. {args.rounds} round(s) x {args.duration:g} s per run, "
        f"medians; wrk -t1; git {git_rev()}.",
    ]
    print("\n\n".join(part for part in out if part))
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = results / f"tls-{stamp}.json"
    meta = {
        "time": stamp,
        "git": git_rev(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "load_before": load_before,
        "load_after": load_after,
        "args": vars(args),
    }
    doc = {
        "meta": meta,
        "targets": [{k: v for k, v in asdict(t).items() if k != "key"} for t in targets],
        "rows": [asdict(r) for r in rows],
        "runs": [asdict(r) for r in runs],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
    ours = [t for t in targets if t.name.startswith("tollway")]
    failed = any(t.skipped for t in ours) or any(
        r.errors for r in rows if r.target.startswith("tollway")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
