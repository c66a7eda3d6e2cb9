"""The UI session generation: a number in the database, signed into every session cookie.

Bumping it ("log out everywhere") makes every cookie issued before refused. Knowing it is no
help in forging a cookie: cookies are signed with the server secret, which is not in the
database.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.store import queries

KV_KEY = "ui_session_generation"


async def generation(engine: AsyncEngine) -> int:
    value = await queries.kv_get(engine, KV_KEY)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


async def revoke_all(engine: AsyncEngine) -> int:
    """Every existing session ends; returns the new generation."""
    new = await generation(engine) + 1
    await queries.kv_set(engine, KV_KEY, str(new))
    return new
