"""Upstream secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key from the server secret.

The key is scrypt-derived from the server secret (TOLLWAY_SECRET_KEY, or the file `tollway init`
writes: tollway.core.server_secret), which is never stored with the data it protects: a copy of
the database alone reveals no upstream key. Rows encrypted by older versions with a key derived
from TOLLWAY_ADMIN_SECRET are still read (decryption only) when that variable is set;
`tollway rotate-secret` re-encrypts them with the server secret.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from tollway.core.server_secret import server_secret
from tollway.core.settings import Settings

_SALT = b"tollway/upstream-secrets/v1"


class SecretKeyMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "No server secret to encrypt upstream keys with: run `tollway init` (it writes one "
            "beside the database) or set TOLLWAY_SECRET_KEY."
        )


class UndecryptableSecret(ValueError):
    """Encrypted with another key (the server secret changed?), or damaged."""


class SecretBox:
    """Encrypts with `material`; decrypts with it or any of `legacy` (older keys)."""

    def __init__(self, material: bytes | None, legacy: tuple[bytes, ...] = ()) -> None:
        keys = [m for m in (material, *legacy) if m]
        if not keys:
            raise SecretKeyMissing()
        self.can_encrypt = bool(material)
        self._fernet = MultiFernet([_fernet(m) for m in keys])

    def encrypt(self, secret: str) -> str:
        if not self.can_encrypt:
            raise SecretKeyMissing()
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise UndecryptableSecret("cannot decrypt an upstream secret") from exc


def _fernet(material: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(material)))


@lru_cache(maxsize=8)
def _derive(material: bytes) -> bytes:
    # scrypt: n=2**14 costs ~50 ms once per process, and makes guessing a weak secret slow.
    return hashlib.scrypt(material, salt=_SALT, n=2**14, r=8, p=1, dklen=32)


def legacy_materials(settings: Settings) -> tuple[bytes, ...]:
    """Keys older versions derived from TOLLWAY_ADMIN_SECRET: read, never written."""
    secret = settings.admin_secret
    if secret is not None and secret.get_secret_value():
        return (secret.get_secret_value().encode(),)
    return ()


def secret_box(settings: Settings, *, reading: bool = False) -> SecretBox:
    """The box for these settings; raises SecretKeyMissing without a server secret (with
    `reading`, a box that only decrypts legacy rows is enough)."""
    secret = server_secret(settings)
    material = secret.encode() if secret else None
    if material is None and not reading:
        raise SecretKeyMissing()
    return SecretBox(material, legacy_materials(settings))
