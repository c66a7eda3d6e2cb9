"""A pytest plugin loaded into the openai SDK's own test run (`-p sdk_plugin`).

Two jobs, nothing else: it writes each test's outcome to the JSON file named by
OPENAI_SUITE_OUTCOMES (so the two runs can be compared test by test), and, when
OPENAI_SUITE_API_KEY is set, it gives the SDK's test clients that key in place of the fixed
"My API Key" of the SDK's tests/conftest.py. Tollway issues its keys itself (a client key's
value cannot be chosen), so the run through Tollway uses a key it created; the SDK's code and
its tests are otherwise untouched. Runs in the SDK's virtualenv: the standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_outcomes: dict[str, str] = {}


def pytest_sessionstart(session: Any) -> None:
    key = os.environ.get("OPENAI_SUITE_API_KEY")
    if not key:
        return
    conftest = sys.modules.get("tests.conftest")
    if conftest is None or not hasattr(conftest, "api_key"):
        raise RuntimeError("the SDK's tests/conftest.py (api_key) was not loaded")
    # Its client fixtures read the module's api_key when they run, after this.
    setattr(conftest, "api_key", key)  # noqa: B010


def pytest_runtest_logreport(report: Any) -> None:
    # One verdict a test: a failure in any phase wins, then a skip, else the call's pass.
    if report.failed:
        _outcomes[report.nodeid] = "error" if report.when != "call" else "failed"
    elif report.skipped and report.nodeid not in _outcomes:
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed and report.nodeid not in _outcomes:
        _outcomes[report.nodeid] = "passed"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get("OPENAI_SUITE_OUTCOMES")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_outcomes, out, indent=1, sort_keys=True)
