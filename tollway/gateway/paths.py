"""Paths with dot segments never reach an upstream.

The relay sends the raw path the client chose to the upstream, with Tollway's key attached;
`/v1/internal/../../anything` would let a client address any path of the upstream's host. A
path is refused when any of its segments is made only of dots, however it was written:
percent-encoded (`%2e`, also encoded twice), with encoded or back slashes as separators
(`..%2f`, `..%5c`, `..\\`), or with a `;parameter` after it (`..;`, read as `..` by some
servers). The caller runs this only when the raw path holds a `.` or `%` or `\\`.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from tollway.core.errors import GatewayError

_DECODE_ROUNDS = 3  # `%252e` is `%2e` to a server that decodes once more


def has_dot_segment(raw_path: bytes) -> bool:
    path = raw_path
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    for segment in path.replace(b"\\", b"/").split(b"/"):
        name = segment.split(b";", 1)[0].strip()
        if name and not name.strip(b"."):
            return True
    return False


def invalid_path() -> GatewayError:
    return GatewayError(
        400,
        "The request path may not contain `.` or `..` segments (encoded or not).",
        "invalid_request_error",
        "invalid_path",
    )
