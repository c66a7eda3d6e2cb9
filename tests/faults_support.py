"""Shared by the fault-matrix tests: a figure line per fault, and raw SSE reading."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

MESSAGES = [{"role": "user", "content": "hi"}]


def figure(fault: str, answered: int, rows: list[dict[str, Any]], right: int) -> int:
    """Print the fault's figure (pytest -s shows it; CI logs keep it) and return the
    number of duplicated rows (request ids written twice)."""
    ids = Counter(r["request_id"] for r in rows)
    duplicates = sum(n - 1 for n in ids.values())
    print(
        f"\nFAULT {fault}: answered={answered} rows={len(rows)} "
        f"right_status_and_error={right} duplicates={duplicates}"
    )
    return duplicates


def sse_events(lines: list[str]) -> list[Any]:
    """The JSON payloads of `data:` lines (not [DONE])."""
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(orjson.loads(line[6:]))
    return out


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
