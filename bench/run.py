"""Tollway throughput/latency benchmark: one command, one table.

    bash bench/run [--duration 10] [--concurrency 1,64] [--quick]

Starts a fake upstream (nginx with canned answers, so it is never the bottleneck), a bare
reference proxy (``bare_proxy.py``) and Tollway itself, all on 127.0.0.1, then drives each with
wrk: POST /v1/chat/completions, non-streaming and streaming, at each concurrency. Prints a table
and writes it as JSON under bench/results/. Everything it starts, it stops (also on Ctrl-C).
See bench/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from fake_upstream import CHAT_COMPLETION, CHAT_COMPLETION_SSE, MODEL, STREAM_HEADER

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent  # the venv's bin: tollway, python
UPSTREAM_KEY = "sk-bench-upstream"
BARE_KEY = "sk-bench-bare"
HOST = "127.0.0.1"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- tools ---------------------------------------------------------------------------------------


def apt_install(package: str) -> bool:
    """Install a Debian package when we can (apt-get present, root). True on success."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def quiet(*cmd: str) -> bool:
        done = subprocess.run(cmd, env=env, capture_output=True, check=False)
        return done.returncode == 0

    log(f"installing {package} with apt-get")
    # A fresh machine has empty package lists: update once and retry.
    return quiet("apt-get", "install", "-y", "-qq", package) or (
        quiet("apt-get", "update", "-qq") and quiet("apt-get", "install", "-y", "-qq", package)
    )


def find_tool(name: str, packages: list[str], required: bool) -> str | None:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    for package in packages:
        if path:
            break
        apt_install(package)
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path and required:
        sys.exit(f"bench: `{name}` is required; install the Debian package {packages[0]!r}")
    return path


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Processes:
    """Starts background processes in their own process group and always stops them."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        with (self.logdir / f"{name}.log").open("wb") as logfile:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: we can kill its workers too
            )
        self.procs.append((name, proc))

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-2000:]
                sys.exit(f"bench: {name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def wait_http(url: str, procs: Processes, timeout: float = 30.0, method: str = "GET") -> None:
    """Poll until the URL answers at all (any HTTP status) -- or /healthz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            req = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError:
            if not url.endswith("/healthz"):
                return  # server is up, it just disliked our probe
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"bench: {url} did not become ready within {timeout:.0f}s")


# --- the fake upstream ---------------------------------------------------------------------------


def nginx_string(text: str) -> str:
    """Quote a literal for nginx `return`: single quotes; `$` would start a variable."""
    assert "'" not in text and "$" not in text and "\\" not in text
    return f"'{text}'"


def start_nginx(nginx: str, port: int, tmp: Path, procs: Processes) -> None:
    prefix = tmp / "nginx"
    for sub in ("temp/body", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen {HOST}:{port};
        location = /v1/chat/completions {{
            # `{STREAM_HEADER}: 1` selects the SSE variant (proxies forward it unchanged).
            if ($http_{STREAM_HEADER.replace("-", "_")} = "1") {{ rewrite ^ /_sse last; }}
            default_type application/json;
            return 200 {nginx_string(CHAT_COMPLETION)};
        }}
        location = /_sse {{
            internal;
            default_type text/event-stream;
            return 200 {nginx_string(CHAT_COMPLETION_SSE)};
        }}
    }}
}}
"""
    )
    procs.start(
        "nginx", [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    )


# --- Tollway -------------------------------------------------------------------------------------


def start_tollway(port: int, upstream_port: int, tmp: Path, procs: Processes, workers: int) -> str:
    """Initialise a fresh SQLite database, create a client key, start `tollway serve`.

    Returns the client key."""
    home = tmp / "tollway"
    home.mkdir()
    config = home / "upstreams.yaml"
    config.write_text(
        "upstreams:\n"
        "  - name: bench-upstream\n"
        f"    base_url: http://{HOST}:{upstream_port}/v1\n"
        f"    api_key: {UPSTREAM_KEY}\n"
        f"    models: [{MODEL}]\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")},
        "TOLLWAY_HOST": HOST,
        "TOLLWAY_PORT": str(port),
        "TOLLWAY_WORKERS": str(workers),
        "TOLLWAY_DATABASE_URL": f"sqlite+aiosqlite:///{home}/tollway.db",
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    tollway = str(BIN / "tollway")

    def cli(*args: str) -> str:
        # cwd=home: a .env in the caller's directory must not leak into the benchmark.
        done = subprocess.run(
            [tollway, *args], cwd=home, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.exit(f"bench: `tollway {' '.join(args)}` failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    cli("init")
    out = cli("create-key", "--name", "bench", "--json")
    try:
        key = str(json.loads(out)["key"])
    except (ValueError, KeyError, TypeError):
        sys.exit(f"bench: unexpected `tollway create-key --json` output:\n{out}")
    procs.start("tollway", [tollway, "serve"], cwd=home, env=env)
    wait_http(f"http://{HOST}:{port}/healthz", procs)
    return key


# --- wrk -----------------------------------------------------------------------------------------

# wrk's done() hook prints one machine-readable line; latencies are in microseconds.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {auth}
{extra}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT %d %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def write_lua(path: Path, key: str, stream: bool) -> None:
    extra = f'wrk.headers["{STREAM_HEADER}"] = "1"' if stream else ""
    path.write_text(
        LUA_TEMPLATE.format(
            body=lua_string(request_body(stream).decode()),
            auth=lua_string(f"Bearer {key}"),
            extra=extra,
        )
    )


def request_body(stream: bool) -> bytes:
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def probe(url: str, key: str, stream: bool) -> None:
    """One request by hand before measuring: the target must answer correctly, not just fast."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if stream:
        headers[STREAM_HEADER] = "1"
    req = urllib.request.Request(url, data=request_body(stream), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, ctype, text = resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, text = exc.code, exc.headers.get("content-type", ""), exc.read()
    if stream:
        ok = status == 200 and "text/event-stream" in ctype and b"data: [DONE]" in text
    else:
        ok = status == 200 and b'"chat.completion"' in text
    if not ok:
        sys.exit(
            f"bench: wrong answer from {url} (stream={stream}): {status} {ctype}\n{text[:500]!r}"
        )


@dataclass
class Row:
    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    rps: float  # successful responses per second
    p50_ms: float
    p99_ms: float
    mean_ms: float
    ratio: float | None = None  # rps / direct rps (same mode and concurrency)
    added_p50_ms: float | None = None  # p50 - direct p50


def run_wrk(wrk: str, url: str, lua: Path, conns: int, seconds: float) -> tuple[int, ...]:
    cmd = [
        wrk,
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    match = re.search(r"^BENCH_RESULT ([\d ]+)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        sys.exit(f"bench: wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return tuple(int(x) for x in match.group(1).split())


def measure(
    wrk: str, target: str, url: str, lua: Path, mode: str, conns: int, args: argparse.Namespace
) -> Row:
    if args.warmup > 0:
        run_wrk(wrk, url, lua, conns, args.warmup)
    requests, duration_us, status, connect, read, write, timeout, p50, p99, mean = run_wrk(
        wrk, url, lua, conns, args.duration
    )
    errors = status + connect + read + write + timeout
    ok = max(0, requests - status)  # wrk counts non-2xx/3xx responses as requests too
    return Row(
        target=target,
        mode=mode,
        concurrency=conns,
        requests=requests,
        errors=errors,
        rps=ok / (duration_us / 1e6),
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        mean_ms=mean / 1000,
    )


# --- output --------------------------------------------------------------------------------------


def fill_ratios(rows: list[Row]) -> None:
    direct = {(r.mode, r.concurrency): r for r in rows if r.target == "direct"}
    for row in rows:
        base = direct.get((row.mode, row.concurrency))
        if base and base.rps > 0:
            row.ratio = row.rps / base.rps
            row.added_p50_ms = row.p50_ms - base.p50_ms


def table(rows: list[Row]) -> str:
    header = [
        "target",
        "mode",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "vs direct",
        "errors",
    ]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r.target,
                r.mode,
                str(r.concurrency),
                f"{r.rps:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                "" if r.added_p50_ms is None else f"{r.added_p50_ms:+.2f}",
                "" if r.ratio is None else f"{r.ratio:.2f}",
                str(r.errors),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0, 1}  # text columns align left, numbers right

    def fmt(line: list[str]) -> str:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


def git_rev() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


# --- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark Tollway against direct and bare hops.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (2)")
    parser.add_argument(
        "--concurrency",
        default="1,64",
        help="comma-separated connection counts (1,64)",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up")
    parser.add_argument(
        "--targets",
        default="direct,bare,tollway",
        help="comma-separated subset of direct,bare,tollway",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
    )
    parser.add_argument("--modes", default="json,stream", type=lambda s: s.split(","))
    parser.add_argument("--workers", type=int, default=1, help="Tollway worker processes (1)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    unknown = set(args.targets) - {"direct", "bare", "tollway"}
    if unknown or set(args.modes) - {"json", "stream"}:
        parser.error(f"unknown target or mode: {sorted(unknown) or args.modes}")
    return args


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks stop our children.

    SIGINT is set back to KeyboardInterrupt explicitly: a shell starting us in the background
    leaves it ignored, and Ctrl-C must always clean up."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main() -> int:
    args = parse_args()
    wrk = find_tool("wrk", ["wrk"], required=True)
    assert wrk
    nginx = find_tool("nginx", ["nginx-light", "nginx"], required=False)

    with (
        signals_raise(),
        tempfile.TemporaryDirectory(prefix="tollway-bench-") as tmpdir,
    ):
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        try:
            upstream_port = free_port()
            if nginx:
                start_nginx(nginx, upstream_port, tmp, procs)
                upstream_kind = "nginx"
            else:
                log("nginx unavailable: falling back to a Python fake upstream (may bottleneck)")
                cmd = [sys.executable, str(BENCH_DIR / "fake_upstream.py"), str(upstream_port)]
                procs.start("upstream", cmd)
                upstream_kind = "python"
            wait_http(f"http://{HOST}:{upstream_port}/v1/chat/completions", procs, method="POST")

            targets: dict[str, tuple[str, str]] = {}  # name -> (origin, client key)
            if "direct" in args.targets:
                targets["direct"] = (f"http://{HOST}:{upstream_port}", UPSTREAM_KEY)
            if "bare" in args.targets:
                port = free_port()
                cmd = [
                    sys.executable,
                    str(BENCH_DIR / "bare_proxy.py"),
                    f"--port={port}",
                    f"--upstream=http://{HOST}:{upstream_port}",
                    f"--key={BARE_KEY}",
                    f"--upstream-key={UPSTREAM_KEY}",
                ]
                procs.start("bare", cmd)
                wait_http(f"http://{HOST}:{port}/", procs)
                targets["bare"] = (f"http://{HOST}:{port}", BARE_KEY)
            if "tollway" in args.targets:
                port = free_port()
                key = start_tollway(port, upstream_port, tmp, procs, args.workers)
                targets["tollway"] = (f"http://{HOST}:{port}", key)

            rows: list[Row] = []
            for name, (origin, key) in targets.items():
                for mode in args.modes:
                    lua = tmp / f"{name}-{mode}.lua"
                    write_lua(lua, key, stream=mode == "stream")
                    url = f"{origin}/v1/chat/completions"
                    probe(url, key, stream=mode == "stream")
                    for conns in args.concurrency:
                        log(f"{name} {mode} c={conns} ({args.duration:g}s)")
                        rows.append(measure(wrk, name, url, lua, mode, conns, args))
                        procs.check_alive()
        finally:
            procs.stop_all()

    fill_ratios(rows)
    print(table(rows))
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = results / f"bench-{stamp}.json"
    meta = {
        "time": stamp,
        "git": git_rev(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "upstream": upstream_kind,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "wrk_threads": 1,
        "tollway_workers": args.workers,
    }
    out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}", file=sys.stderr)
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
