"""The admin secret: from TOLLWAY_ADMIN_SECRET, or generated once by `tollway init` and kept
only as a hash in the database. Tollway never runs its admin side on an empty secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.settings import Settings
from tollway.services import sessions
from tollway.store import queries

KV_KEY = "admin_secret_sha256"
MIN_LENGTH = 16


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AdminVerifier:
    """Constant-time check of a presented admin secret against the configured one."""

    def __init__(self, digest: str | None) -> None:
        self.digest = digest

    @property
    def enabled(self) -> bool:
        return self.digest is not None

    def check(self, presented: str | None) -> bool:
        if self.digest is None or not presented:
            return False
        return hmac.compare_digest(_digest(presented), self.digest)


def configured_secret(settings: Settings) -> str | None:
    if settings.admin_secret is None:
        return None
    value = settings.admin_secret.get_secret_value().strip()
    return value or None


async def ensure_admin_secret(engine: AsyncEngine, settings: Settings) -> str | None:
    """Generate and store (hashed) a strong admin secret if none exists. Returns the new secret
    so the caller can show it once; None when one was already configured."""
    if configured_secret(settings) is not None:
        return None
    if await queries.kv_get(engine, KV_KEY) is not None:
        return None
    secret = "twa-" + secrets.token_urlsafe(32)
    await queries.kv_set(engine, KV_KEY, _digest(secret))
    return secret


async def reset_admin_secret(engine: AsyncEngine) -> str:
    """A new generated secret replaces the stored one (the old one stops working, and every
    UI session ends)."""
    secret = "twa-" + secrets.token_urlsafe(32)
    await queries.kv_set(engine, KV_KEY, _digest(secret))
    await sessions.revoke_all(engine)
    return secret


async def load_verifier(engine: AsyncEngine, settings: Settings) -> AdminVerifier:
    """The environment's secret wins; otherwise the hash `tollway init` stored."""
    secret = configured_secret(settings)
    if secret is not None:
        if len(secret) < MIN_LENGTH:
            raise ValueError(f"TOLLWAY_ADMIN_SECRET must be at least {MIN_LENGTH} characters")
        return AdminVerifier(_digest(secret))
    return AdminVerifier(await queries.kv_get(engine, KV_KEY))
