"""Which client headers reach an upstream, which configured ones it adds, and the check every
configured header value passes (no control characters: a CR or LF in a key would inject
header lines). Computed once per upstream, so the relay's per-request work stays one set
lookup per client header."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Hop-by-hop headers (RFC 9110 7.6.1): about one connection, never relayed either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Never forwarded: hop-by-hop headers, the client's credentials, and what our upstream
# client or the relay sets itself (host, length, accept-encoding, request id).
DROP_REQUEST = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"accept-encoding",
    b"expect",
    b"authorization",
    b"x-api-key",
    b"api-key",
    b"x-goog-api-key",
    b"cookie",
    b"x-request-id",
}
# Dropped unless an upstream lists them in `pass_headers`: they choose which organisation,
# project or billing project of the operator's account pays (the openai SDK sends the first
# two whenever OPENAI_ORG_ID / OPENAI_PROJECT_ID are set; a mismatch is a 401 from OpenAI).
ACCOUNT_HEADERS = frozenset({b"openai-organization", b"openai-project", b"x-goog-user-project"})
# Configured `headers:` may not set these: framing and hop-by-hop headers, and what Tollway
# sets itself (the key goes in `api_key`).
RESERVED = DROP_REQUEST - {b"x-api-key", b"api-key", b"x-goog-api-key", b"cookie"}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(value: str) -> bool:
    """CR, LF, NUL, any other C0 control character (tab included) or DEL."""
    return _CONTROL.search(value) is not None


def check_value(value: str, what: str) -> None:
    """Raise ValueError naming `what` (never the value: it may be a secret)."""
    if has_control(value):
        raise ValueError(f"{what} contains a control character (CR, LF, NUL, ...)")


def check_headers(headers: Mapping[str, str], pass_headers: Iterable[str]) -> None:
    """Names must be HTTP tokens Tollway does not set itself; values without control
    characters; `pass_headers` may not pass what is always dropped."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        if name.lower().encode() in RESERVED:
            raise ValueError(f"headers: {name} is set by Tollway and cannot be configured")
        check_value(value, f"headers: the value of {name}")
    for name in pass_headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"pass_headers: {name!r} is not a valid header name")
        if name.lower().encode() in DROP_REQUEST:
            raise ValueError(f"pass_headers: {name} is never passed to an upstream")


def client_drop_set(headers: Mapping[str, str], pass_headers: Iterable[str]) -> frozenset[bytes]:
    """Client header names (lower-case, as ASGI gives them) this upstream does not get: the
    fixed drops, the account selectors it does not pass, and names it sets itself."""
    passed = {n.lower().encode() for n in pass_headers}
    own = {n.lower().encode() for n in headers}
    return DROP_REQUEST | (ACCOUNT_HEADERS - passed) | own


def auth_name(auth: str) -> bytes:
    """The header an upstream's key goes in: `bearer` (Authorization: Bearer), `x-api-key`
    (Anthropic), or `header:<Name>` (any other single header holding the bare key)."""
    if auth == "bearer":
        return b"authorization"
    if auth == "x-api-key":
        return b"x-api-key"
    name = auth[len("header:") :] if auth.startswith("header:") else ""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"auth: {auth!r} is not bearer, x-api-key or header:<Name>")
    if name.lower().encode() in RESERVED:
        raise ValueError(f"auth: {name} is set by Tollway and cannot hold the key")
    return name.lower().encode()


def fixed_lines(
    auth_header: bytes, headers: Mapping[str, str], auth_field: bytes = b"authorization"
) -> bytes:
    """The header lines every request to this upstream ends with."""
    lines = [auth_field + b": " + auth_header + b"\r\n"] if auth_header else []
    lines += [n.lower().encode() + b": " + v.encode() + b"\r\n" for n, v in headers.items()]
    lines.append(b"accept-encoding: identity\r\n")
    return b"".join(lines)
