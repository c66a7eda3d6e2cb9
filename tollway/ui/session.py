"""The admin's browser session: a signed, expiring cookie that also carries the CSRF token.

No server-side session table: the cookie is `v2.<generation>.<expires>.<csrf>.<mac>`,
HMAC-SHA256 over the rest with a key derived from the server secret (not in the database, so
the database alone cannot mint a cookie) and the admin secret's hash (so changing the admin
secret logs every browser out). The generation is a number in the database: "log out
everywhere" bumps it and every cookie signed with an older one is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "tollway_session"
LOGIN_COOKIE = "tollway_login"  # double-submit token for the login form (no session yet)
VERSION = "v2"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Session:
    expires: int
    csrf: str
    generation: int = 0


def derive_key(server_secret: str, admin_digest: str) -> bytes:
    return hmac.new(
        server_secret.encode(), f"tollway-ui-session\0{admin_digest}".encode(), hashlib.sha256
    ).digest()


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def issue(
    key: bytes, ttl: float, generation: int = 0, clock: Clock = time.time
) -> tuple[str, Session]:
    """A fresh session (new CSRF token) valid for `ttl` seconds; returns (cookie value, session)."""
    session = Session(int(clock() + ttl), new_token(), generation)
    payload = f"{VERSION}.{generation}.{session.expires}.{session.csrf}"
    return f"{payload}.{_mac(key, payload)}", session


def read(
    key: bytes, value: str | None, generation: int = 0, clock: Clock = time.time
) -> Session | None:
    """The session a cookie value proves, or None if it is forged, malformed, expired or of
    an older generation (logged out everywhere)."""
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != VERSION:
        return None
    payload = ".".join(parts[:4])
    if not hmac.compare_digest(_mac(key, payload).encode(), parts[4].encode()):
        return None
    try:
        gen, expires = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if gen != generation or expires <= clock():
        return None
    return Session(expires, parts[3], gen)


def same_token(expected: str | None, presented: str | None) -> bool:
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
