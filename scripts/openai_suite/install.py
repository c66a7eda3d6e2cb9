"""What the suite needs, installed once into the cache directory (.cache/openai-suite/):
the openai sdist (its tests), a virtualenv with the SDK and its test requirements, and Prism.

Each part is checked against what this directory pins: the sdist's sha256 against the openai
hashes of requirements.lock, the virtualenv installed with `pip --require-hashes`, Prism with
`npm ci` from package-lock.json (integrity hashes). A part is redone when its pins change.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "requirements.lock"
NPM_FILES = ("package.json", "package-lock.json")


class SetupError(Exception):
    """Something the suite needs could not be had (no npm, no registry): not a test result."""


@dataclass(frozen=True)
class Installed:
    sdk_dir: Path  # the unpacked sdist: its tests/ run from here
    python: Path  # the SDK virtualenv's interpreter
    prism: Path  # the prism executable


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise SetupError(f"{what} failed (exit {done.returncode}):\n  " + "\n  ".join(tail))


def openai_pin() -> tuple[str, set[str]]:
    """The openai version requirements.lock pins, and the sha256 hashes it accepts."""
    text = LOCK.read_text()
    m = re.search(r"^openai==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+)", text, re.M)
    if m is None:
        raise SetupError(f"{LOCK.name} pins no openai version")
    return m.group(1), set(re.findall(r"sha256:([0-9a-f]{64})", m.group(2)))


def sdist(cache: Path) -> Path:
    """The pinned openai sdist, downloaded and unpacked once; its hash checked each time."""
    version, hashes = openai_pin()
    archive = cache / f"openai-{version}.tar.gz"
    unpacked = cache / f"openai-{version}"
    if not archive.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"openai=={version}",
                    "-d",
                    tmp,
                ],
                f"downloading the openai {version} sdist",
            )
            (got,) = Path(tmp).glob("openai-*.tar.gz")
            got.replace(archive)
    if _digest(archive) not in hashes:
        archive.unlink()
        raise SetupError(f"{archive.name} does not match the hashes in {LOCK.name}")
    if not (unpacked / "tests" / "conftest.py").exists():
        shutil.rmtree(unpacked, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    return unpacked


def venv(cache: Path) -> Path:
    """A virtualenv with exactly requirements.lock (the SDK itself and its test tools)."""
    where = cache / "venv"
    python = where / "bin" / "python"
    stamp = where / ".suite-stamp"
    want = _digest(LOCK)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    shutil.rmtree(where, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(where)], "creating the SDK's virtualenv")
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--require-hashes",
            "-r",
            str(LOCK),
        ],
        "installing the SDK's test requirements",
    )
    stamp.write_text(want)
    return python


def prism(cache: Path) -> Path:
    """Prism from package-lock.json (`npm ci`; no install scripts: they only phone home)."""
    where = cache / "prism"
    exe = where / "node_modules" / ".bin" / "prism"
    stamp = where / ".suite-stamp"
    want = _digest(*(HERE / f for f in NPM_FILES))
    if exe.exists() and stamp.exists() and stamp.read_text() == want:
        return exe
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SetupError("node and npm are needed for Prism (Debian: apt-get install nodejs npm)")
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for f in NPM_FILES:
        shutil.copyfile(HERE / f, where / f)
    _run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        "installing Prism with npm",
        cwd=where,
    )
    stamp.write_text(want)
    return exe


def install(cache: Path) -> Installed:
    cache.mkdir(parents=True, exist_ok=True)
    return Installed(sdk_dir=sdist(cache), python=venv(cache), prism=prism(cache))
