"""Edits of a JSON request body made in its bytes, without parsing and re-serialising it.

A 1 MB prompt costs milliseconds to parse into objects and as much again to write back; these
edits copy the body once. Each is only used where the text alone says it is right (see the
callers in body.py); otherwise the body is re-serialised from the parsed object.
"""

from __future__ import annotations

import re

import orjson

# JSON's whitespace (RFC 8259): space, tab, LF, CR. A match never copies the body.
_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_SPACE = (b" ", b"\t", b"\n", b"\r")
USAGE_MEMBER = b'"stream_options":{"include_usage":true}'
_USAGE_MEMBER_COMMA = USAGE_MEMBER + b","
_MODEL_NAME = b'"model"'
# Every letter of `model` is U+0064..U+006F: escaped, it is written \u006X.
_ESCAPED_MODEL_LETTER = b"\\u006"


def _skip_space(body: bytes, pos: int) -> int:
    match = _WHITESPACE.match(body, pos)
    return match.end() if match else pos


def with_usage_option(body: bytes) -> bytes:
    """The body with `"stream_options":{"include_usage":true}` as its object's first member.

    Only for a body whose top-level object has no `stream_options` at all (the caller knows
    from its parse): then the body holds that name once and no parser can read it two ways.
    Member order means nothing in JSON, so the rest stays as the client wrote it."""
    start = 0 if body[:1] == b"{" else _skip_space(body, 0)
    if body[start : start + 1] != b"{":
        raise ValueError("not a JSON object")
    after = body[start + 1 : start + 2]
    if after in _SPACE:
        first = _skip_space(body, start + 1)
        after = body[first : first + 1]
    member = USAGE_MEMBER if after == b"}" else _USAGE_MEMBER_COMMA
    view = memoryview(body)  # one copy of the body, not two
    return b"".join((view[: start + 1], member, view[start + 1 :]))


def model_value_span(body: bytes, model: str) -> tuple[int, int] | None:
    """Where the top-level `model` member's string value sits (quotes included), when the
    text alone can tell; None when it cannot.

    The caller knows from its parse that the top-level object has exactly one `model`
    member, with the string value `model`. Its name is in the text as `"model"` unless a
    letter of it is written as an escape (`\\u006X`): so when no such escape occurs anywhere
    and `"model"` occurs exactly once, that occurrence is the member's name (a nested
    `"model"` key, or a string ending in `model` after an escaped quote, makes it twice and
    the answer None). The value found is checked against `model` besides."""
    if body.count(_MODEL_NAME) != 1 or _ESCAPED_MODEL_LETTER in body:
        return None
    colon = _skip_space(body, body.find(_MODEL_NAME) + len(_MODEL_NAME))
    if body[colon : colon + 1] != b":":
        return None
    start = _skip_space(body, colon + 1)
    if body[start : start + 1] != b'"':
        return None
    end = _string_end(body, start)
    if end is None:
        return None
    try:
        if orjson.loads(body[start:end]) != model:
            return None
    except orjson.JSONDecodeError:
        return None
    return start, end


def _string_end(body: bytes, start: int) -> int | None:
    """The index just past the closing quote of the JSON string opening at `start`."""
    pos = start + 1
    while True:
        quote = body.find(b'"', pos)
        if quote < 0:
            return None
        slashes = 0
        while body[quote - 1 - slashes] == 0x5C:  # backslashes right before it
            slashes += 1
        if slashes % 2 == 0:  # not itself escaped
            return quote + 1
        pos = quote + 1


def replace_span(body: bytes, span: tuple[int, int], value: bytes) -> bytes:
    view = memoryview(body)
    return b"".join((view[: span[0]], value, view[span[1] :]))
