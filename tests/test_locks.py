"""The hashed lock files: made from pyproject.toml as it is now (a dependency changed without
`bash scripts/lock` fails here), every package pinned with hashes, installed with
--require-hashes by scripts/run and scripts/test, and a tampered package refused."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lock_inputs", REPO / "scripts/lock_inputs.py")
assert _spec is not None and _spec.loader is not None
lock_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_inputs)

ENTRY = re.compile(
    r"^([A-Za-z0-9_.-]+)==(\S+)(?: ;[^\\]*)? \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",
    re.M,
)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(kind: str) -> dict[str, str]:
    text = (REPO / f"requirements/{kind}.lock").read_text()
    entries = {_norm(m.group(1)): m.group(2) for m in ENTRY.finditer(text)}
    # Every requirement line is one of those entries: pinned, with at least one hash.
    requirement_lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert len(requirement_lines) == len(entries), "a lock line without == or --hash"
    return entries


@pytest.mark.parametrize("kind", ["runtime", "dev"])
def test_lock_is_made_from_pyproject_as_it_is(kind: str) -> None:
    first_lines = (REPO / f"requirements/{kind}.lock").read_text().splitlines()[:2]
    assert first_lines[1] == lock_inputs.DIGEST_PREFIX + lock_inputs.digest(kind), (
        f"pyproject.toml's dependencies changed since requirements/{kind}.lock: bash scripts/lock"
    )
    pins = locked(kind)
    for req in lock_inputs.requirements(kind):
        name, version = req.split("==")
        assert pins.get(_norm(name)) == version, f"{req} is not what {kind}.lock holds"


def test_the_digest_sees_a_new_dependency(tmp_path: Path) -> None:
    text = (REPO / "pyproject.toml").read_text()
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace('"aiohttp==', '"six==1.17.0",\n  "aiohttp==', 1))
    assert lock_inputs.digest("runtime", changed) != lock_inputs.digest("runtime")


def test_scripts_install_only_from_the_locks() -> None:
    for script, lock in (("run", "runtime"), ("test", "dev")):
        text = (REPO / f"scripts/{script}").read_text()
        installs = [ln.strip() for ln in text.splitlines() if "pip install" in ln]
        pip = '"$PY" -m pip install -q --disable-pip-version-check'
        assert installs == [
            f'{pip} --require-hashes -r "$LOCK"',
            f"{pip} --no-deps --no-build-isolation -e .",
        ]
        assert f"LOCK=requirements/{lock}.lock" in text


def _wheel(folder: Path, body: str) -> Path:
    """A minimal pure-Python wheel `hashdemo 1.0` holding one module."""
    path = folder / "hashdemo-1.0-py3-none-any.whl"
    files = {
        "hashdemo.py": body.encode(),
        "hashdemo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hashdemo\nVersion: 1.0\n",
        "hashdemo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("hashdemo-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("hashdemo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_a_tampered_package_is_refused(tmp_path: Path) -> None:
    """pip with --require-hashes, as the scripts call it: the package the lock hashed installs,
    the same name and version with other content does not."""
    index = tmp_path / "index"
    index.mkdir()
    good = hashlib.sha256(_wheel(index, "VALUE = 1\n").read_bytes()).hexdigest()
    lock = tmp_path / "demo.lock"
    lock.write_text(f"hashdemo==1.0 \\\n    --hash=sha256:{good}\n")

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--no-index", "--find-links", str(index), "--target", str(tmp_path / "t"),
             "--require-hashes", "-r", str(lock)],
            capture_output=True,
            text=True,
        )  # fmt: skip

    ok = install()
    assert ok.returncode == 0, ok.stderr
    _wheel(index, "VALUE = 1\nimport os  # tampered\n")
    tampered = install()
    assert tampered.returncode != 0
    assert "DO NOT MATCH THE HASHES" in tampered.stderr
