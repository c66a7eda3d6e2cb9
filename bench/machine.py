"""What the benchmark needs around it: tools (wrk, nginx), Redis databases, facts to record."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from proc import HOST, log

REPO = Path(__file__).resolve().parent.parent
REDIS_PORT = 6379


def apt_install(package: str) -> bool:
    """Install a Debian package when we can (apt-get present, root). True on success."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def quiet(*cmd: str) -> bool:
        done = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=900)
        return done.returncode == 0

    log(f"installing {package} with apt-get")
    # A fresh machine has empty package lists: update once and retry.
    return quiet("apt-get", "install", "-y", "-qq", package) or (
        quiet("apt-get", "update", "-qq") and quiet("apt-get", "install", "-y", "-qq", package)
    )


def find_tool(name: str, packages: list[str]) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    for package in packages:
        if path:
            break
        apt_install(package)
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        sys.exit(f"bench: `{name}` is required; install the Debian package {packages[0]!r}")
    return path


def find_tools() -> tuple[str, str]:
    """wrk (the load, outside Python) and nginx (the fake upstream and the bare hop)."""
    return find_tool("wrk", ["wrk"]), find_tool("nginx", ["nginx-light", "nginx"])


def git_rev() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "tollway"],
        capture_output=True,
        text=True,
        check=False,
    )
    rev = done.stdout.strip() or "unknown"
    return rev + ("+dirty tollway/" if dirty.stdout.strip() else "")


def uptime() -> str:
    """The load averages (other work on the machine skews every figure)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def redis_databases(count: int) -> list[str]:
    """`count` empty Redis databases (highest numbers first; tests use db 0 with prefixes).

    Empty when picked, so emptying them afterwards (release_redis) touches nothing of others'.
    No Redis, or not enough empty databases: fewer URLs, and those targets are skipped."""
    if count <= 0:
        return []
    try:
        import redis

        urls = []
        for db in range(15, 0, -1):
            client = redis.Redis(host=HOST, port=REDIS_PORT, db=db, socket_timeout=2)
            try:
                if client.dbsize() == 0:
                    urls.append(f"redis://{HOST}:{REDIS_PORT}/{db}")
            finally:
                client.close()
            if len(urls) == count:
                break
        return urls
    except Exception as exc:  # no Redis here: the Redis targets say so
        log(f"Redis not usable on {HOST}:{REDIS_PORT}: {exc}")
        return []


def release_redis(urls: list[str]) -> None:
    """Empty the databases the run used (limit counters with long windows would linger)."""
    if not urls:
        return
    import redis

    for url in urls:
        try:
            client = redis.Redis.from_url(url, socket_timeout=2)
            try:
                client.flushdb()
            finally:
                client.close()
        except Exception as exc:
            log(f"could not empty {url}: {exc}")
