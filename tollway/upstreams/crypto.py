"""Upstream secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key from settings.

The key comes from TOLLWAY_SECRET_KEY, or, when that is unset, is derived from
TOLLWAY_ADMIN_SECRET (scrypt, so a short admin secret is still costly to guess). It is never
stored next to the data it protects: a copy of the database alone reveals no upstream key.
With neither setting, upstreams cannot be stored in the database (config, key list and
PocketBase sources still work).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

from tollway.core.settings import Settings

_SALT = b"tollway/upstream-secrets/v1"


class SecretKeyMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "Set TOLLWAY_SECRET_KEY (or TOLLWAY_ADMIN_SECRET) to store upstream keys in the "
            "database: they are encrypted with it."
        )


class UndecryptableSecret(ValueError):
    """Encrypted with another key (TOLLWAY_SECRET_KEY changed?), or damaged."""


class SecretBox:
    def __init__(self, material: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(material)))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise UndecryptableSecret("cannot decrypt an upstream secret") from exc


@lru_cache(maxsize=8)
def _derive(material: bytes) -> bytes:
    # scrypt: n=2**14 costs ~50 ms once per process, and makes guessing a weak secret slow.
    return hashlib.scrypt(material, salt=_SALT, n=2**14, r=8, p=1, dklen=32)


def secret_box(settings: Settings) -> SecretBox:
    """The box for these settings; raises SecretKeyMissing without a usable secret."""
    for secret in (settings.secret_key, settings.admin_secret):
        if secret is not None and secret.get_secret_value():
            return SecretBox(secret.get_secret_value().encode())
    raise SecretKeyMissing()
