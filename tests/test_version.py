"""One version: tollway/__init__.py's __version__ is what the package metadata (pyproject.toml
reads it), `tollway --version` and the newest CHANGELOG release say."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import tollway

REPO = Path(__file__).resolve().parent.parent


def test_one_version_everywhere() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", tollway.__version__)
    assert version("tollway") == tollway.__version__
    printed = subprocess.run(
        [sys.executable, "-m", "tollway", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert printed == f"tollway {tollway.__version__}\n"
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert releases and releases[0] == tollway.__version__
    assert "## [Unreleased]" in changelog
