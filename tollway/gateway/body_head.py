"""Read the top-level members routing and accounting need from a JSON body, nothing else.

msgspec checks the whole document's syntax but builds Python objects only for `model`,
`stream` and `stream_options`: the rest (a long prompt's messages) is skipped in C. A full
orjson parse of a 1 MB prompt builds thousands of objects and took about half of a
request's CPU (py-spy, bench/long_context.py).

A member given twice is read differently by different parsers (orjson and most keep the
last, some the first): each occurrence of those three passes through the decoder's hook, so
a repeat is noticed and the caller sends the upstream a re-serialised body with one of each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import msgspec


class _Member:
    """One occurrence of a member's value (of any JSON type, null included)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_ABSENT = _Member(None)


class _Head(msgspec.Struct):
    # The type is _Member, not _Member | None: so a JSON null also goes through the hook.
    model: _Member = _ABSENT
    stream: _Member = _ABSENT
    stream_options: _Member = _ABSENT


class _Reader:
    """A decoder whose hook counts the occurrences it is handed: one per thread, so the
    count is this decode's own (a thread-local counter in the hook cost twice as much)."""

    __slots__ = ("decoder", "seen")

    def __init__(self) -> None:
        self.seen = 0
        self.decoder = msgspec.json.Decoder(_Head, dec_hook=self._hook)

    def _hook(self, kind: type, value: Any) -> Any:
        if kind is not _Member:
            raise NotImplementedError
        self.seen += 1
        return _Member(value)


_readers = threading.local()


@dataclass(slots=True)
class Head:
    model: Any = None
    stream: Any = None
    stream_options: Any = None
    has_stream_options: bool = False
    repeated: bool = False  # one of the three members occurs twice or more


def read_head(body: bytes) -> Head | None:
    """The three members (the last of each, as orjson), or None when this reader cannot
    tell: not a JSON object, malformed, or nested too deep (then the caller parses it
    fully, which decides as before). The UTF-8 of skipped strings is not checked (the
    upstream judges its prompt's text); that of the three members is."""
    reader: _Reader | None = getattr(_readers, "reader", None)
    if reader is None:
        reader = _readers.reader = _Reader()
    reader.seen = 0
    try:
        head = reader.decoder.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    present = (
        (head.model is not _ABSENT)
        + (head.stream is not _ABSENT)
        + (head.stream_options is not _ABSENT)
    )
    return Head(
        head.model.value,
        head.stream.value,
        head.stream_options.value,
        head.stream_options is not _ABSENT,
        reader.seen > present,
    )
