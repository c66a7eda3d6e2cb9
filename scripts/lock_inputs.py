"""What the lock files are made from, read out of pyproject.toml (used by scripts/lock and by
tests/test_locks.py, so a dependency added to pyproject.toml without re-locking fails CI).

    python scripts/lock_inputs.py runtime|dev   -> the requirement lines, one a line
    python scripts/lock_inputs.py digest runtime|dev -> their sha256 (the lock's first line)
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
DIGEST_PREFIX = "# inputs sha256: "


def requirements(kind: str, pyproject: Path = PYPROJECT) -> list[str]:
    """Build tools (so `--no-build-isolation` installs are hashed too), the runtime
    dependencies, and for `dev` the dev extra: as pyproject.toml writes them."""
    data = tomllib.loads(pyproject.read_text())
    reqs = list(data["build-system"]["requires"]) + list(data["project"]["dependencies"])
    if kind == "dev":
        reqs += _extra(data, "dev")
    elif kind != "runtime":
        raise SystemExit(f"unknown lock {kind!r} (runtime or dev)")
    return reqs


def _extra(data: dict[str, Any], name: str) -> list[str]:
    """An extra's requirements, with the project's own extras it names (`tollway[docs]`)
    expanded in place: a resolver cannot find the project itself on an index."""
    project = data["project"]["name"]
    out: list[str] = []
    for req in data["project"]["optional-dependencies"][name]:
        if req.startswith(project + "["):
            for inner in req[len(project) + 1 : req.index("]")].split(","):
                out += _extra(data, inner.strip())
        else:
            out.append(req)
    return out


def digest(kind: str, pyproject: Path = PYPROJECT) -> str:
    text = "\n".join(sorted(r.replace(" ", "").lower() for r in requirements(kind, pyproject)))
    return hashlib.sha256(text.encode()).hexdigest()


if __name__ == "__main__":
    if sys.argv[1] == "digest":
        print(DIGEST_PREFIX + digest(sys.argv[2]))
    else:
        print("\n".join(requirements(sys.argv[1])))
