"""Install the peer gateways the benchmark compares against, into bench/.peers/ (gitignored).

    python bench/peers.py            # install (or check) both; prints what is usable
    bash bench/run --peers ...       # the same as the first step of a benchmark run

- LiteLLM proxy: ``litellm[proxy]==1.109.1`` in its own venv (bench/.peers/litellm/venv). It
  pins ``certifi`` and ``litellm-proxy-extras`` to releases newer than the package index has,
  so uv installs it with ``--override bench/peers/litellm/overrides.txt`` (exactly those two,
  set to the newest the index has) and ``--compile-bytecode`` (a cold start must not include
  compiling thousands of modules).
- Portkey gateway: ``@portkey-ai/gateway`` from npm, pinned in bench/peers/portkey/package.json
  with its lock file; npm ``overrides`` pins ``@hono/node-server`` to 1.13.8 (streaming breaks
  with >= 1.14). Copied to bench/.peers/portkey and installed with ``npm ci``.

Each install is skipped when a stamp (hash of its inputs) says it is already done. A peer that
cannot be installed is reported with the reason; the benchmark then lists it as skipped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SPECS = BENCH_DIR / "peers"  # committed inputs
PEERS = BENCH_DIR / ".peers"  # installed trees (gitignored)

LITELLM_SPEC = "litellm[proxy]==1.109.1"
# Virtual-key mode needs the prisma package (litellm's `extra_proxy` extra, whose other cloud
# SDKs the benchmark does not need). Installed so that the benchmark really tries that mode.
PRISMA_SPEC = "prisma==0.15.0"
UV_SPEC = "uv==0.13.9"
PORTKEY_FILES = ("package.json", "package-lock.json", "bind-localhost.cjs")
INSTALL_TIMEOUT = 1800.0  # seconds per command: a slow index must not hang the run forever


@dataclass
class Peer:
    name: str
    ok: bool
    note: str  # why not, when not ok; the version otherwise


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    """Run an install command; None on success, else the tail of its output."""
    log(" ".join(cmd))
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return (done.stdout + done.stderr)[-1500:]
    return None


# --- LiteLLM -------------------------------------------------------------------------------------


def litellm_venv() -> Path:
    return PEERS / "litellm" / "venv"


def litellm_python() -> Path:
    return litellm_venv() / "bin" / "python"


def _litellm_ready() -> tuple[bool, str]:
    """(installed and current, the stamp an install writes)."""
    overrides = SPECS / "litellm" / "overrides.txt"
    want = _digest(
        LITELLM_SPEC.encode(), PRISMA_SPEC.encode(), UV_SPEC.encode(), overrides.read_bytes()
    )
    stamp = litellm_venv() / ".bench-stamp"
    ok = stamp.is_file() and stamp.read_text() == want and litellm_python().exists()
    return ok, want


def install_litellm() -> Peer:
    overrides = SPECS / "litellm" / "overrides.txt"
    venv = litellm_venv()
    ready, want = _litellm_ready()
    if ready:
        return Peer("litellm", True, LITELLM_SPEC)
    if venv.exists():
        shutil.rmtree(venv)
    # The base interpreter, not our venv's: LiteLLM must not see Tollway's packages.
    base = getattr(sys, "_base_executable", sys.executable)
    python = str(litellm_python())
    for cmd in (
        [base, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", UV_SPEC],
        [
            python,
            "-m",
            "uv",
            "pip",
            "install",
            "--python",
            python,
            "--override",
            str(overrides),
            "--compile-bytecode",
            LITELLM_SPEC,
            PRISMA_SPEC,
        ],
    ):
        failed = _run(cmd)
        if failed is not None:
            return Peer("litellm", False, f"install failed: {failed.strip().splitlines()[-1:]}")
    (venv / ".bench-stamp").write_text(want)
    return Peer("litellm", True, LITELLM_SPEC)


# --- Portkey -------------------------------------------------------------------------------------


def portkey_dir() -> Path:
    return PEERS / "portkey"


def portkey_entry() -> Path:
    return portkey_dir() / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def portkey_version() -> str:
    data = json.loads((SPECS / "portkey" / "package.json").read_text())
    return f"@portkey-ai/gateway@{data['dependencies']['@portkey-ai/gateway']}"


def _portkey_ready() -> tuple[bool, str]:
    want = _digest(*((SPECS / "portkey" / f).read_bytes() for f in PORTKEY_FILES))
    stamp = portkey_dir() / ".bench-stamp"
    return stamp.is_file() and stamp.read_text() == want and portkey_entry().is_file(), want


def install_portkey() -> Peer:
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        return Peer("portkey", False, "node/npm not installed (Debian: nodejs npm)")
    target = portkey_dir()
    stamp = target / ".bench-stamp"
    ready, want = _portkey_ready()
    if ready:
        return Peer("portkey", True, portkey_version())
    target.mkdir(parents=True, exist_ok=True)
    for name in PORTKEY_FILES:
        shutil.copyfile(SPECS / "portkey" / name, target / name)
    failed = _run([npm, "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=target)
    if failed is not None or not portkey_entry().is_file():
        return Peer("portkey", False, f"npm ci failed: {(failed or '').strip()[-300:]}")
    stamp.write_text(want)
    return Peer("portkey", True, portkey_version())


def check_all(names: list[str]) -> dict[str, Peer]:
    """What is installed, without installing anything."""
    found = {}
    hint = "not installed or out of date: add --peers"
    if "litellm" in names:
        ok = _litellm_ready()[0]
        found["litellm"] = Peer("litellm", ok, LITELLM_SPEC if ok else hint)
    if "portkey" in names:
        ok = _portkey_ready()[0]
        found["portkey"] = Peer("portkey", ok, portkey_version() if ok else hint)
    return found


def install_all(names: list[str]) -> dict[str, Peer]:
    installers = {"litellm": install_litellm, "portkey": install_portkey}
    return {name: installers[name]() for name in names if name in installers}


def main() -> int:
    peers = install_all(["litellm", "portkey"])
    for peer in peers.values():
        print(f"{peer.name}: {'ok' if peer.ok else 'NOT INSTALLED'} ({peer.note})")
    return 0 if all(p.ok for p in peers.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
