"""Client key generation and hashing. Keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "tw-"
DISPLAY_PREFIX_LEN = 10  # "tw-" + 7 chars: enough to recognise, far too little to guess


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def display_prefix(raw: str) -> str:
    return raw[:DISPLAY_PREFIX_LEN]


def mask(secret: str) -> str:
    """A secret shown to humans: its first characters and its length class only."""
    if len(secret) <= 8:
        return "****"
    return secret[:4] + "…" + secret[-2:]
