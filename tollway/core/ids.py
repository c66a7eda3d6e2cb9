"""Request ids: unique across processes and instances, and cheap (no uuid per request)."""

from __future__ import annotations

import itertools
import os

_prefix = os.urandom(8).hex()  # 64 random bits per process
_counter = itertools.count(1)


def new_request_id() -> str:
    """32 hex characters, like a uuid4 hex: the process prefix, then a counter."""
    return f"{_prefix}{next(_counter):016x}"


def reseed() -> None:
    """A forked worker must not share its parent's prefix."""
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1)
