"""The key changes log: which client keys (by hash) changed, for every instance's key cache.

A key mutation records its key's hash(es) in the same transaction as the change; instances
read the rows after the last id they saw and forget exactly those keys. The "keys" revision
is bumped first: its row lock makes concurrent mutations take their ids in commit order, so
a reader never skips a row that commits late.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.store.queries import bump_revision, utcnow
from tollway.store.tables import key_changes

KEEP = timedelta(days=1)  # older rows are pruned; a cache entry lives a minute at most
MAX_READ = 1000


async def record(conn: AsyncConnection, *hashes: str) -> None:
    """Inside the caller's transaction, so the rows commit (or roll back) with the change."""
    await bump_revision(conn, "keys")
    now = utcnow()
    await conn.execute(key_changes.insert(), [{"key_hash": h, "at": now} for h in hashes])
    await conn.execute(key_changes.delete().where(key_changes.c.at < now - KEEP))


async def last_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = (await conn.execute(select(func.max(key_changes.c.id)))).scalar()
    return int(found or 0)


async def read_after(engine: AsyncEngine, after: int) -> list[tuple[int, str]]:
    """(id, key_hash) of changes after `after`, oldest first, at most MAX_READ."""
    stmt = (
        select(key_changes.c.id, key_changes.c.key_hash)
        .where(key_changes.c.id > after)
        .order_by(key_changes.c.id)
        .limit(MAX_READ)
    )
    async with engine.connect() as conn:
        return [(int(i), str(h)) for i, h in (await conn.execute(stmt)).all()]
