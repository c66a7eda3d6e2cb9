"""Small queries shared by the gateway (key loader), the services and the usage writer.

SQLAlchemy Core only, portable between SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.core.types import KeyLimits, KeyRecord
from tollway.store.tables import api_keys, kv, state_revisions

REVISION_NAMES = ("keys", "upstreams", "prices")


# --- time -------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(dt: datetime) -> datetime: ...
@overload
def as_utc(dt: None) -> None: ...
@overload
def as_utc(dt: datetime | None) -> datetime | None: ...
def as_utc(dt: datetime | None) -> datetime | None:
    """Aware UTC datetime. SQLite hands back naive values; we only ever store UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def from_unix(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# --- upserts ----------------------------------------------------------------------------------


def upsert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which has on_conflict_do_update (both spell it the same)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- keys -------------------------------------------------------------------------------------

_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.enabled,
    api_keys.c.email,
    api_keys.c.expires_at,
    api_keys.c.models,
    api_keys.c.rpm,
    api_keys.c.rpd,
    api_keys.c.tpm,
    api_keys.c.tpd,
    api_keys.c.token_quota,
    api_keys.c.budget_usd,
    api_keys.c.budget_period,
    api_keys.c.max_parallel,
    api_keys.c.response_cache,
)


MAX_SHARED_LIMITS = 10_000
_shared_limits: dict[KeyLimits, KeyLimits] = {}


def shared_limits(limits: KeyLimits) -> KeyLimits:
    """One object for equal limits (frozen, so safe to share): keys are usually made in a few
    tiers, and a cache of a hundred thousand keys then holds a few limit objects, not one
    (~350 bytes with its numbers) per key. Bounded: past the limit it starts over."""
    found = _shared_limits.get(limits)
    if found is None:
        if len(_shared_limits) >= MAX_SHARED_LIMITS:
            _shared_limits.clear()
        found = _shared_limits[limits] = limits
    return found


def key_record_from_row(row: Any) -> KeyRecord:
    expires = as_utc(row.expires_at)
    models: Sequence[str] | None = row.models
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        enabled=bool(row.enabled),
        email=row.email,
        expires_at=expires.timestamp() if expires is not None else None,
        models=frozenset(models) if models is not None else None,
        limits=shared_limits(
            KeyLimits(
                rpm=row.rpm,
                rpd=row.rpd,
                tpm=row.tpm,
                tpd=row.tpd,
                token_quota=row.token_quota,
                budget_usd=row.budget_usd,
                budget_period=row.budget_period or "none",
                max_parallel=row.max_parallel,
            )
        ),
        response_cache=bool(row.response_cache),
    )


async def load_key_by_hash(engine: AsyncEngine, key_hash: str) -> KeyRecord | None:
    """The key cache's miss path: one SELECT on the unique key_hash index."""
    stmt = select(*_KEY_COLUMNS).where(api_keys.c.key_hash == key_hash)
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    return key_record_from_row(row) if row is not None else None


async def load_keys_by_hash(engine: AsyncEngine, key_hashes: list[str]) -> dict[str, KeyRecord]:
    """The key cache's reads in batches: one SELECT on the unique key_hash index for many
    keys. Hashes of unknown keys are absent from the answer."""
    stmt = select(api_keys.c.key_hash, *_KEY_COLUMNS).where(api_keys.c.key_hash.in_(key_hashes))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {str(row.key_hash): key_record_from_row(row) for row in rows}


# --- state revisions --------------------------------------------------------------------------


async def bump_revision(conn: AsyncConnection, name: str) -> None:
    """+1 on a revision counter, inside the caller's transaction so it commits with the change."""
    stmt = upsert(conn, state_revisions).values(name=name, revision=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[state_revisions.c.name],
        set_={"revision": state_revisions.c.revision + 1},
    )
    await conn.execute(stmt)


async def read_revisions(engine: AsyncEngine) -> dict[str, int]:
    """All counters; names never bumped read as 0 so pollers can compare blindly."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(state_revisions))).all()
    revisions = dict.fromkeys(REVISION_NAMES, 0)
    revisions.update({row.name: int(row.revision) for row in rows})
    return revisions


# --- kv ---------------------------------------------------------------------------------------


async def kv_get(engine: AsyncEngine, key: str) -> str | None:
    async with engine.connect() as conn:
        value = (await conn.execute(select(kv.c.value).where(kv.c.key == key))).scalar()
    return str(value) if value is not None else None


async def kv_set(engine: AsyncEngine, key: str, value: str) -> None:
    async with engine.begin() as conn:
        stmt = upsert(conn, kv).values(key=key, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=[kv.c.key], set_={"value": value})
        await conn.execute(stmt)


async def kv_delete(engine: AsyncEngine, key: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(kv.delete().where(kv.c.key == key))
