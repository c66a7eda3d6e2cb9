"""Starting the peer gateways (installed by peers.py) as benchmark targets, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request

from fake_upstream import MODEL, STREAM_HEADER
from peers import Peer, litellm_venv, portkey_dir, portkey_entry
from proc import HOST, free_port
from targets import SLOW_MODEL, UPSTREAM_KEY, Ctx, Target, spawn

LITELLM_MASTER_KEY = "sk-bench-litellm-master"


def skipped(name: str, note: str) -> Target:
    return Target(name, skipped=True, note=note)


def _litellm_config(ctx: Ctx, path_name: str) -> str:
    config = ctx.tmp / path_name
    models = [(MODEL, ctx.upstream_port), (SLOW_MODEL, ctx.slow_port)]
    lines = ["model_list:"]
    for model, port in models:
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f"      api_base: http://{HOST}:{port}/v1",
            f"      api_key: {UPSTREAM_KEY}",
        ]
    lines += [
        "general_settings:",
        f"  master_key: {LITELLM_MASTER_KEY}",
        # Forwards x-* client headers: the fake upstream picks SSE by `x-bench-stream: 1`.
        "  forward_client_headers_to_llm_api: true",
    ]
    config.write_text("\n".join(lines) + "\n")
    return str(config)


def _litellm_env(ctx: Ctx) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # Offline: use the bundled model price map instead of fetching it at start.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["LITELLM_LOG"] = "ERROR"
    return env


def start_litellm(ctx: Ctx, peer: Peer | None, name: str, workers: int) -> Target:
    if peer is None or not peer.ok:
        return skipped(name, f"not installed: {peer.note if peer else 'run with --peers'}")
    port = free_port()
    t = Target(name, f"http://{HOST}:{port}", LITELLM_MASTER_KEY, first_byte=True)
    t.note = f"{peer.note}, master key, {workers} worker(s), no DB (no usage records)"
    cmd = [
        str(litellm_venv() / "bin" / "litellm"),
        "--config",
        _litellm_config(ctx, f"litellm-{name}.yaml"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    return spawn(ctx, t, cmd, cwd=ctx.tmp, env=_litellm_env(ctx), timeout=120)


def start_litellm_vk(ctx: Ctx, peer: Peer | None) -> Target:
    """Virtual-key mode needs PostgreSQL and Prisma; tried for real, reported as it went."""
    name = "litellm-vk"
    if peer is None or not peer.ok:
        return skipped(name, f"not installed: {peer.note if peer else 'run with --peers'}")
    psql = shutil.which("psql")
    if psql is None:
        return skipped(name, "psql not found (needs PostgreSQL on 127.0.0.1:5432)")
    db = f"tollway_bench_vk_{os.getpid()}"
    pg = [psql, "-h", HOST, "-U", "postgres", "-q", "-c"]
    made = subprocess.run([*pg, f"CREATE DATABASE {db}"], capture_output=True, check=False)
    if made.returncode != 0:
        return skipped(name, "PostgreSQL not reachable on 127.0.0.1:5432")
    # Dropped after every process is stopped (a running LiteLLM holds connections to it).
    ctx.cleanups.append(
        lambda: subprocess.run([*pg, f"DROP DATABASE IF EXISTS {db}"], capture_output=True)
    )
    port = free_port()
    t = Target(name, f"http://{HOST}:{port}", LITELLM_MASTER_KEY)
    env = _litellm_env(ctx)
    env["DATABASE_URL"] = f"postgresql://postgres@{HOST}:5432/{db}"
    cmd = [
        str(litellm_venv() / "bin" / "litellm"),
        "--config",
        _litellm_config(ctx, "litellm-vk.yaml"),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    t = spawn(ctx, t, cmd, cwd=ctx.tmp, env=env, timeout=120)
    if t.skipped:
        if "binaries.prisma.sh" in ctx.procs.log_tail(name, 50000):
            t.note = "cannot start offline: Prisma downloads its engines at run time"
        return t
    t.key = _litellm_virtual_key(t)
    t.note = f"{peer.note}, virtual key, PostgreSQL"
    return t


def _litellm_virtual_key(t: Target) -> str:
    req = urllib.request.Request(
        f"{t.origin}/key/generate",
        data=b"{}",
        headers={
            "Authorization": f"Bearer {LITELLM_MASTER_KEY}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["key"])


def start_portkey(
    ctx: Ctx,
    peer: Peer | None,
    name: str = "portkey",
    upstream: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Target:
    """`upstream`: the bench model's origin (default the fake upstream's plain port); for an
    https:// one, `extra_env` carries NODE_EXTRA_CA_CERTS."""
    if peer is None or not peer.ok:
        return skipped(name, f"not installed: {peer.note if peer else 'run with --peers'}")
    node = shutil.which("node")
    if node is None:
        return skipped(name, "node not found")
    port = free_port()
    t = Target(name, f"http://{HOST}:{port}", UPSTREAM_KEY, first_byte=True)
    t.note = f"{peer.note}, no auth/limits/usage (OSS gateway has none)"

    def routing(origin: str) -> dict[str, str]:
        return {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{origin}/v1",
            "x-portkey-forward-headers": STREAM_HEADER,
        }

    t.headers = routing(upstream or f"http://{HOST}:{ctx.upstream_port}")
    t.slow_headers = routing(f"http://{HOST}:{ctx.slow_port}")
    cmd = [
        node,
        "--require",
        str(portkey_dir() / "bind-localhost.cjs"),  # it would listen on every interface
        str(portkey_entry()),
        f"--port={port}",
        "--headless",
    ]
    env = {**os.environ, "NODE_ENV": "production", **(extra_env or {})}
    return spawn(ctx, t, cmd, cwd=portkey_dir(), env=env)
