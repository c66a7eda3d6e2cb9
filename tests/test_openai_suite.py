"""The official openai SDK's own resource tests pass through Tollway exactly as they pass
directly against a mock upstream (`bash scripts/openai-suite`: Prism mocking our spec.yaml).

The run needs node and npm, and on first use the package registries (the openai sdist, its test
requirements and Prism go into .cache/openai-suite/): without them it skips locally and fails
in CI. About a minute once installed; the first install adds two or three."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from openai_suite.__main__ import SUITE  # noqa: E402
from openai_suite.compare import Comparison, table  # noqa: E402
from openai_suite.install import openai_pin  # noqa: E402

NO_TOOLS_EXIT = 3  # scripts/openai-suite: the tools could not be installed or started


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the openai SDK suite (scripts/test installs node)")
    pytest.skip(f"{reason}; CI runs the openai SDK suite")


@pytest.mark.sdk_suite
def test_sdk_tests_pass_through_tollway_as_directly(tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("node and npm are not installed")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [str(REPO / "scripts" / "openai-suite"), "--report", str(report)],
        cwd=REPO,
        env={**os.environ, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=1200,  # a first install included; about a minute once cached
    )
    print(done.stdout)  # the table, in pytest's -s output and in a failure's captured output
    if done.returncode == NO_TOOLS_EXIT:
        _unavailable(f"the suite could not be set up: {done.stderr.strip()[-800:]}")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]

    result = json.loads(report.read_text())
    assert result["differing"] == 0 and result["direct"] == result["tollway"]
    assert result["passed_directly"] == result["passed_through_tollway"] > 0
    # Against the mock every test passes, but for the few the SDK itself skips (respx mocks
    # cannot intercept its aiohttp client).
    assert set(result["direct"].values()) <= {"passed", "skipped"}
    # Every file of the suite ran, and the tests of the issue that started it (a model the
    # pool does not list, retrieved through a "*" upstream) are among those that passed.
    ran = {t.split("::", 1)[0] for t in result["tollway"]}
    assert ran == set(SUITE)
    retrieved = [t for t, v in result["tollway"].items() if "models.py::" in t and "retrieve" in t]
    assert len(retrieved) >= 15 and {result["tollway"][t] for t in retrieved} == {"passed"}


def test_a_test_passing_only_directly_is_a_regression() -> None:
    c = Comparison(
        direct={"a": "passed", "b": "passed", "c": "failed", "d": "passed", "e": "skipped"},
        tollway={"a": "passed", "b": "failed", "c": "passed", "e": "skipped"},
    )
    assert c.regressions == ["b", "d"]  # d did not run through Tollway at all
    assert c.differing == ["b", "c", "d"]  # c fails directly, passes through: shown, not fatal
    assert c.counts() == {
        "tests": 5,
        "passed_directly": 3,
        "passed_through_tollway": 2,
        "differing": 3,
    }
    shown = table(c)
    assert "passed -> missing" in shown and "failed -> passed" in shown


def test_the_suite_runs_the_sdk_version_tollway_tests_with() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    pinned = re.search(r'"openai==([^"]+)"', pyproject)
    assert pinned is not None
    assert openai_pin()[0] == pinned.group(1)
