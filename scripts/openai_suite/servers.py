"""The two servers of a suite run, each a child process on 127.0.0.1 that is stopped on exit:
Prism mocking spec.yaml, and a real `tollway serve` (temporary SQLite database) whose one
upstream serves every model ("*") from Prism's base URL."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .install import SetupError

SPEC = Path(__file__).resolve().parent / "spec.yaml"
PR_SET_PDEATHSIG = 1  # prctl(2)
UPSTREAM_KEY = "suite-upstream-key"  # what Tollway sends Prism; Prism wants a bearer, any bearer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Tollway's settings (this run's alone count) and with
    127.0.0.1 kept away from any HTTP proxy the machine sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def die_with_parent() -> None:
    """In a child before exec (Linux): SIGTERM when the suite's process dies, even by SIGKILL
    (a timeout), so no mock, gateway or SDK test run outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: `stop` in the suite's `finally` still ends them


class Child:
    """A child process with its output in a log file; `stop` ends it (and waits)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = cwd / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def wait_until(self, url: str, headers: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise SetupError(f"{self.name} did not answer {url} within {timeout:.0f} s:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_prism(prism: Path, workdir: Path) -> tuple[Child, str]:
    port = free_port()
    cmd = [str(prism), "mock", "--host", "127.0.0.1", "--port", str(port), str(SPEC)]
    child = Child("prism", cmd, clean_env(), workdir)
    return child, f"http://127.0.0.1:{port}"


def wait_prism(child: Child, base_url: str) -> None:
    child.wait_until(base_url + "/models", {"authorization": "Bearer ready-check"}, 90)


def _tollway(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SetupError(f"tollway {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def prepare_tollway(workdir: Path, upstream_url: str) -> tuple[dict[str, str], str]:
    """A fresh database with one client key, and the config naming Prism as the upstream.
    Returns the environment `tollway serve` runs with and the client key."""
    config = workdir / "tollway.yaml"
    config.write_text(
        "upstreams:\n"
        "  - name: prism\n"
        f"    base_url: {upstream_url}\n"
        f"    api_key: {UPSTREAM_KEY}\n"
        '    models: "*"\n'
    )
    env = clean_env(
        TOLLWAY_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'tollway.db'}",
        TOLLWAY_CONFIG=str(config),
        TOLLWAY_HOST="127.0.0.1",
        TOLLWAY_PORT=str(free_port()),
    )
    _tollway(["init"], env, workdir)
    created = json.loads(_tollway(["create-key", "--name", "openai-suite", "--json"], env, workdir))
    return env, str(created["key"])


def start_tollway(env: dict[str, str], workdir: Path, key: str) -> tuple[Child, str]:
    child = Child("tollway", [sys.executable, "-m", "tollway", "serve"], env, workdir)
    base = f"http://127.0.0.1:{env['TOLLWAY_PORT']}"
    child.wait_until(base + "/v1/models", {"authorization": f"Bearer {key}"}, 60)
    return child, base + "/v1"
