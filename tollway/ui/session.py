"""The admin's browser session: a signed, expiring cookie that also carries the CSRF token.

No server-side session table: the cookie is `v1.<expires>.<csrf>.<mac>`, HMAC-SHA256 over the
rest with a key derived from the admin secret's hash (and TOLLWAY_SECRET_KEY when set), so
changing the admin secret logs every browser out.
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
VERSION = "v1"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Session:
    expires: int
    csrf: str


def derive_key(admin_digest: str, secret_key: str | None) -> bytes:
    material = f"tollway-ui-session\0{admin_digest}\0{secret_key or ''}".encode()
    return hashlib.sha256(material).digest()


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def issue(key: bytes, ttl: float, clock: Clock = time.time) -> tuple[str, Session]:
    """A fresh session (new CSRF token) valid for `ttl` seconds; returns (cookie value, session)."""
    session = Session(int(clock() + ttl), new_token())
    payload = f"{VERSION}.{session.expires}.{session.csrf}"
    return f"{payload}.{_mac(key, payload)}", session


def read(key: bytes, value: str | None, clock: Clock = time.time) -> Session | None:
    """The session a cookie value proves, or None if it is forged, malformed or expired."""
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        return None
    payload = ".".join(parts[:3])
    if not hmac.compare_digest(_mac(key, payload), parts[3]):
        return None
    try:
        expires = int(parts[1])
    except ValueError:
        return None
    if expires <= clock():
        return None
    return Session(expires, parts[2])


def same_token(expected: str | None, presented: str | None) -> bool:
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
