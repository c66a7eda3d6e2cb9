"""The targets the benchmark drives: how each is started, and its cold start.

Cold start is process spawn -> first successful proxied request: a real chat completion is
POSTed every 10 ms until one comes back 200 with a completion (never a health check).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fake_upstream import MODEL
from load import request_body
from nginx import hop_conf, nginx_cmd, upstream_conf
from proc import HOST, Processes, assert_loopback_only, free_port, log

BENCH_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's bin: tollway, python
UPSTREAM_KEY = "sk-bench-upstream"
BARE_KEY = "sk-bench-bare"
SLOW_MODEL = "bench-slow"  # routed to the first-byte probe's slow upstream (first_byte.py)


@dataclass
class Ctx:
    """What every starter needs: where to put files, and the upstreams' ports."""

    procs: Processes
    tmp: Path
    nginx: str
    upstream_port: int
    slow_port: int
    redis_urls: list[str]  # one Redis database per Tollway variant using Redis
    cleanups: list[Callable[[], object]] = field(default_factory=list)  # after all stopped


@dataclass
class Target:
    name: str
    origin: str = ""
    key: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # extra request headers
    slow_headers: dict[str, str] = field(default_factory=dict)  # same, for the slow upstream
    session: int = 0  # the process tree's session id (leader pid); 0 when not running
    cold_start_s: float | None = None
    note: str = ""  # what is on; or why it was skipped
    skipped: bool = False
    first_byte: bool = False  # can route to the slow upstream (first-byte measurement)


def spawn(
    ctx: Ctx,
    target: Target,
    cmd: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Target:
    """Start the target's process and time it to the first good proxied request."""
    url = f"{target.origin}/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {target.key}"}
    headers.update(target.headers)
    body = request_body(stream=False)
    started = time.perf_counter()
    proc = ctx.procs.start(target.name, cmd, cwd=cwd, env=env)
    target.session = proc.pid
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            return fail(ctx, target, f"exited with {proc.returncode}")
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200 and b'"chat.completion"' in resp.read():
                    target.cold_start_s = time.perf_counter() - started
                    assert_loopback_only(target.name, proc.pid)
                    return target
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or not routing yet (an HTTPError is a URLError)
        time.sleep(0.01)
    return fail(ctx, target, f"no good answer within {timeout:.0f}s")


def fail(ctx: Ctx, target: Target, why: str) -> Target:
    tail = ctx.procs.log_tail(target.name, 600).strip().splitlines()
    log(f"{target.name}: {why}; log tail:\n  " + "\n  ".join(tail[-8:]))
    for proc in [p for n, p in ctx.procs.procs if n == target.name]:
        ctx.procs.stop(proc)
    target.skipped, target.session = True, 0
    target.note = f"failed to start: {why}" + (f" ({tail[-1][:120]})" if tail else "")
    return target


# --- nginx and the bare Python hop ---------------------------------------------------------------


def start_direct(ctx: Ctx) -> Target:
    t = Target("direct", f"http://{HOST}:{ctx.upstream_port}", UPSTREAM_KEY)
    t.note = "nginx fake upstream itself (the ceiling)"
    cmd = nginx_cmd(ctx.nginx, upstream_conf(ctx.tmp / "upstream", ctx.upstream_port))
    return spawn(ctx, t, cmd)


def start_nginx_hop(ctx: Ctx) -> Target:
    port = free_port()
    t = Target("nginx", f"http://{HOST}:{port}", UPSTREAM_KEY)
    t.note = "nginx proxy_pass, keep-alive pool (the limit for one hop)"
    return spawn(ctx, t, nginx_cmd(ctx.nginx, hop_conf(ctx.tmp / "hop", port, ctx.upstream_port)))


BARE_KINDS = {  # target name -> (upstream client, workers)
    "bare": ("tollway", 1),
    "bare-w2": ("tollway", 2),
    "bare-aiohttp": ("aiohttp", 1),
}


def start_bare(
    ctx: Ctx,
    name: str = "bare",
    kind: str | None = None,
    upstream: str | None = None,
    ca_bundle: Path | None = None,
) -> Target:
    """`kind` picks the stack (BARE_KINDS; default: the name's); `upstream` is an origin
    (default the fake upstream's plain port), https:// verified against `ca_bundle`."""
    client, workers = BARE_KINDS[kind or name]
    port = free_port()
    t = Target(name, f"http://{HOST}:{port}", BARE_KEY)
    stack = "Tollway's upstream client" if client == "tollway" else "aiohttp"
    t.note = f"uvicorn+uvloop+{stack} pass-through, one key check, {workers} worker(s)"
    cmd = [
        sys.executable,
        str(BENCH_DIR / "bare_proxy.py"),
        f"--port={port}",
        f"--upstream={upstream or f'http://{HOST}:{ctx.upstream_port}'}",
        f"--key={BARE_KEY}",
        f"--upstream-key={UPSTREAM_KEY}",
        f"--client={client}",
        f"--workers={workers}",
    ]
    if ca_bundle is not None:
        cmd.append(f"--ca-bundle={ca_bundle}")
    return spawn(ctx, t, cmd)


# --- Tollway -------------------------------------------------------------------------------------


def start_tollway(
    ctx: Ctx,
    name: str,
    workers: int,
    redis_url: str | None,
    extra_env: dict[str, str] | None = None,
    upstream: str | None = None,
    make_keys: Callable[[Path], str] | None = None,
) -> Target:
    """A fresh SQLite database, a key with every limit set, then `tollway serve`. `upstream`
    is the bench model's origin (default the fake upstream's plain port); an https:// one
    needs `TOLLWAY_UPSTREAM_CA_BUNDLE` in `extra_env` unless the system trusts it.

    `make_keys(database file)`, when given, replaces make_key.py: it fills the initialised
    database and returns the key the start-up probe uses (many_keys.py's million keys)."""
    port = free_port()
    home = ctx.tmp / name
    home.mkdir()
    (home / "upstreams.yaml").write_text(
        "upstreams:\n"
        "  - name: bench-upstream\n"
        f"    base_url: {upstream or f'http://{HOST}:{ctx.upstream_port}'}/v1\n"
        f"    api_key: {UPSTREAM_KEY}\n"
        f"    models: [{MODEL}]\n"
        "  - name: slow-upstream\n"
        f"    base_url: http://{HOST}:{ctx.slow_port}/v1\n"
        f"    api_key: {UPSTREAM_KEY}\n"
        f"    models: [{SLOW_MODEL}]\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")},
        "TOLLWAY_HOST": HOST,
        "TOLLWAY_PORT": str(port),
        "TOLLWAY_WORKERS": str(workers),
        "TOLLWAY_DATABASE_URL": f"sqlite+aiosqlite:///{home}/tollway.db",
        "TOLLWAY_CONFIG": str(home / "upstreams.yaml"),
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    if redis_url:
        env["TOLLWAY_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    t = Target(name, f"http://{HOST}:{port}", first_byte=True)
    backend = f"Redis {redis_url.rsplit('/', 1)[-1]}" if redis_url else "in-process"
    t.note = f"{workers} worker(s); auth+limits ({backend})+usage (SQLite)"
    if extra_env:
        t.note += "; " + ", ".join(sorted(extra_env))

    def setup(*cmd: str) -> str | None:
        # cwd=home: a .env in the caller's directory must not leak into the benchmark.
        done = subprocess.run(
            list(cmd), cwd=home, env=env, capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            fail(ctx, t, f"`{' '.join(cmd[-2:])}` failed: {(done.stdout + done.stderr)[-300:]}")
            return None
        return done.stdout

    if setup(str(BIN / "tollway"), "init") is None:
        return t
    if make_keys is not None:
        t.key = make_keys(home / "tollway.db")
    else:
        out = setup(sys.executable, str(BENCH_DIR / "make_key.py"))
        if out is None:
            return t
        t.key = str(json.loads(out)["key"])
    return spawn(ctx, t, [str(BIN / "tollway"), "serve"], cwd=home, env=env)
