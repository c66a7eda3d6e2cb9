"""Bounds and cleans the text fields of a usage event before it is written.

Path and model come from the client, the upstream model and error type from configuration or
the upstream: any of them may be longer than its column, or hold a NUL (PostgreSQL refuses it in
text) or other control characters. Done in the writer process, not on the request path; the
common case (short, printable) costs one `len` and one `isprintable` per field.
"""

from __future__ import annotations

import re
from dataclasses import replace

from tollway.core.types import UsageEvent

from .tables import usage_records

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # and lone surrogates
_INT_MAX = 2**31 - 1  # Integer columns are 32-bit on PostgreSQL

# The event's text fields and the size of their columns.
TEXT_FIELDS: tuple[tuple[str, int], ...] = tuple(
    (name, usage_records.c[name].type.length or 0)  # type: ignore[attr-defined]
    for name in (
        "request_id",
        "method",
        "endpoint",
        "model",
        "upstream",
        "upstream_model",
        "error_type",
        "fallback_from",
        "error_message",
    )
)
MAX_FAILURES = 10  # failed attempts kept per row
FAILURE_TEXT = 300  # each of upstream, model, why
INT_FIELDS = (
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "attempts",
)


def clean_text(value: str, size: int) -> str:
    if value.isprintable() and len(value) <= size:
        return value
    # NUL, other control characters and lone surrogates become U+FFFD: the row shows they were.
    return _CONTROL.sub("\ufffd", value)[:size]


def clean(ev: UsageEvent) -> UsageEvent:
    """The event itself when nothing needs cleaning, else a cleaned copy."""
    changes: dict[str, object] = {}
    for name, size in TEXT_FIELDS:
        value = getattr(ev, name)
        if value is not None and (len(value) > size or not value.isprintable()):
            changes[name] = clean_text(value, size)
    if ev.failures is not None:
        failures = _clean_failures(ev.failures)
        if failures != ev.failures:
            changes["failures"] = failures
    for name in INT_FIELDS:
        value = getattr(ev, name)
        if value is not None and not -_INT_MAX <= value <= _INT_MAX:
            changes[name] = max(-_INT_MAX, min(_INT_MAX, value))
    return replace(ev, **changes) if changes else ev  # type: ignore[arg-type]


def _clean_failures(failures: object) -> list[list[str | None]] | None:
    """At most MAX_FAILURES [upstream, model, why] triples of bounded, printable text (the
    events come from our own relay, but a spooled file may have been edited)."""
    if not isinstance(failures, list):
        return None
    out: list[list[str | None]] = []
    for item in failures[:MAX_FAILURES]:
        if isinstance(item, list):
            out.append(
                [clean_text(v, FAILURE_TEXT) if isinstance(v, str) else None for v in item[:3]]
            )
    return out or None
