"""Client key administration: create, list, get, update, enable/disable, rotate, delete.

Secrets are stored only as SHA-256 hashes; the raw key leaves this module once, in CreatedKey.
Every mutation records the changed key's hash(es) in the key changes log (and bumps the
"keys" revision) in its own transaction, so every instance forgets exactly that key within a
poll interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import ColumnElement, and_, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.core.secrets import KEY_PREFIX, display_prefix, generate_key, hash_key
from tollway.services.errors import Invalid, NotFound
from tollway.services.key_status import KeySummary, summaries
from tollway.store import key_changes
from tollway.store.queries import as_utc, utcnow
from tollway.store.tables import api_keys

BudgetPeriod = Literal["none", "daily", "weekly", "monthly"]
KeyStatus = Literal["active", "disabled", "expired"]
STATUSES: tuple[KeyStatus, ...] = ("active", "disabled", "expired")
MAX_PAGE = 1000

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# Bounded by the columns (INTEGER / BIGINT) so an absurd value is a 422, not a database error.


def _no_bool_or_text(v: Any) -> Any:
    # `true` or "5" is not a count: JSON clients get a 422 instead of a surprise (5.0 is fine).
    if isinstance(v, bool | str):
        raise ValueError("expected an integer")
    return v


Count = Annotated[int, BeforeValidator(_no_bool_or_text), Field(ge=0, le=2**31 - 1)]
BigCount = Annotated[int, BeforeValidator(_no_bool_or_text), Field(ge=0, le=2**53)]
Money = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Flag = Annotated[bool, Strict()]


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _clean_email(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip()
    if not v:
        return None
    if "@" not in v or len(v) > 320:
        raise ValueError("not an email address")
    return v


def _clean_models(v: list[str] | None) -> list[str] | None:
    # None = every model; [] = none at all. Stored sorted and deduplicated.
    if v is None:
        return None
    return sorted({m.strip() for m in v if m.strip()})


def _clean_expiry(v: datetime | None) -> datetime | None:
    try:
        v = as_utc(v)  # naive input is taken as UTC
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("expiry out of range") from None
    if v is not None and not 1970 <= v.year <= 9998:
        raise ValueError("expiry must be between 1970 and 9998")
    return v


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("email", check_fields=False)
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return _clean_email(v)

    @field_validator("models", check_fields=False)
    @classmethod
    def _models(cls, v: list[str] | None) -> list[str] | None:
        return _clean_models(v)

    @field_validator("expires_at", check_fields=False, mode="before")
    @classmethod
    def _expiry_iso(cls, v: Any) -> Any:
        # pydantic would read a bare number as unix seconds; an expiry must say what it means.
        if isinstance(v, int | float) or (isinstance(v, str) and _NUMBER.fullmatch(v.strip())):
            raise ValueError("expected an ISO 8601 date-time")
        return v

    @field_validator("expires_at", check_fields=False)
    @classmethod
    def _expiry(cls, v: datetime | None) -> datetime | None:
        return _clean_expiry(v)


class KeyCreate(_KeyFields):
    name: Name
    email: str | None = None
    enabled: Flag = True
    expires_at: datetime | None = None
    models: list[str] | None = None
    rpm: Count | None = None
    rpd: Count | None = None
    tpm: Count | None = None
    tpd: Count | None = None
    token_quota: BigCount | None = None
    budget_usd: Money | None = None
    budget_period: BudgetPeriod = "none"
    max_parallel: Count | None = None
    response_cache: Flag = False


class KeyUpdate(_KeyFields):
    """Only the fields given are changed; an explicit None clears a nullable field."""

    # Not nullable (absent = unchanged; null is refused by update_key, hidden from the schema).
    name: Name | SkipJsonSchema[None] = None
    email: str | None = None
    enabled: Flag | SkipJsonSchema[None] = None
    expires_at: datetime | None = None
    models: list[str] | None = None
    rpm: Count | None = None
    rpd: Count | None = None
    tpm: Count | None = None
    tpd: Count | None = None
    token_quota: BigCount | None = None
    budget_usd: Money | None = None
    budget_period: BudgetPeriod | SkipJsonSchema[None] = None
    max_parallel: Count | None = None
    response_cache: Flag | SkipJsonSchema[None] = None


class KeyInfo(BaseModel):
    """A key as admins see it. Never carries the secret or its hash."""

    id: int
    name: str
    prefix: str
    email: str | None
    enabled: bool
    status: KeyStatus
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    models: list[str] | None
    rpm: int | None
    rpd: int | None
    tpm: int | None
    tpd: int | None
    token_quota: int | None
    budget_usd: float | None
    budget_period: str
    max_parallel: int | None
    # Spend, tokens, requests today and the badge (active/expired/exhausted/limited/disabled).
    summary: KeySummary | None = None
    response_cache: bool = False


class CreatedKey(BaseModel):
    """The result of create/rotate: the raw key, shown to the admin exactly once."""

    key: str = Field(repr=False)
    info: KeyInfo


class KeyPage(BaseModel):
    items: list[KeyInfo]
    total: int
    offset: int
    limit: int


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: M | Mapping[str, Any]) -> M:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def key_status(enabled: bool, expires_at: datetime | None, now: datetime) -> KeyStatus:
    if not enabled:
        return "disabled"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


def _info(row: Any, now: datetime) -> KeyInfo:
    expires_at = as_utc(row.expires_at)
    return KeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        email=row.email,
        enabled=bool(row.enabled),
        status=key_status(bool(row.enabled), expires_at, now),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        expires_at=expires_at,
        last_used_at=as_utc(row.last_used_at),
        models=row.models,
        rpm=row.rpm,
        rpd=row.rpd,
        tpm=row.tpm,
        tpd=row.tpd,
        token_quota=row.token_quota,
        budget_usd=row.budget_usd,
        budget_period=row.budget_period,
        max_parallel=row.max_parallel,
        response_cache=bool(row.response_cache),
    )


_INFO_COLUMNS = [c for c in api_keys.c if c.name not in ("key_hash", "metadata")]


async def _fetch(conn: AsyncConnection, key_id: int) -> KeyInfo:
    row = (await conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.id == key_id))).first()
    if row is None:
        raise NotFound(f"no key with id {key_id}")
    info = _info(row, utcnow())
    return (await _with_summaries(conn, [info]))[0]


async def _with_summaries(conn: AsyncConnection, infos: list[KeyInfo]) -> list[KeyInfo]:
    found = await summaries(conn, ((i, i.status) for i in infos), utcnow())
    for info in infos:
        info.summary = found[info.id]
    return infos


# --- reads ------------------------------------------------------------------------------------


async def get_key(engine: AsyncEngine, key_id: int) -> KeyInfo:
    async with engine.connect() as conn:
        return await _fetch(conn, key_id)


def _status_filter(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    enabled = api_keys.c.enabled.is_(True)
    if status == "disabled":
        return api_keys.c.enabled.is_(False)
    if status == "expired":
        return and_(enabled, api_keys.c.expires_at <= now)
    return and_(enabled, or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now))


def _search_filter(search: str) -> ColumnElement[bool]:
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    cond = or_(
        api_keys.c.name.ilike(pattern, escape="\\"),
        api_keys.c.email.ilike(pattern, escape="\\"),
        api_keys.c.prefix.ilike(pattern, escape="\\"),
    )
    if search.startswith(KEY_PREFIX):
        # A pasted full secret finds its key without ever storing the secret.
        cond = or_(cond, api_keys.c.key_hash == hash_key(search))
    return cond


async def list_keys(
    engine: AsyncEngine,
    *,
    offset: int = 0,
    limit: int = 50,
    search: str | None = None,
    status: str | None = None,
) -> KeyPage:
    """A page of keys, newest first, with the total matching count."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"offset must be >= 0 and limit between 1 and {MAX_PAGE}")
    now = utcnow()
    conds: list[ColumnElement[bool]] = [true()]
    if status:
        if status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}")
        conds.append(_status_filter(status, now))
    if search and search.strip():
        conds.append(_search_filter(search.strip()))
    where = and_(*conds)
    async with engine.connect() as conn:
        total = (
            await conn.execute(select(func.count()).select_from(api_keys).where(where))
        ).scalar()
        rows = (
            await conn.execute(
                select(*_INFO_COLUMNS)
                .where(where)
                .order_by(api_keys.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
        ).all()
        items = await _with_summaries(conn, [_info(r, now) for r in rows])
    return KeyPage(items=items, total=int(total or 0), offset=offset, limit=limit)


class KeyName(BaseModel):
    id: int
    name: str


async def key_names(engine: AsyncEngine, limit: int = 500) -> list[KeyName]:
    """Ids and names of the newest `limit` keys, for a filter's choices: one short read, no
    standing or usage (list_keys sums each key's usage)."""
    stmt = select(api_keys.c.id, api_keys.c.name).order_by(api_keys.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [KeyName(id=r.id, name=r.name) for r in rows]


# --- writes -----------------------------------------------------------------------------------


def _new_secret() -> tuple[str, dict[str, str]]:
    raw = generate_key()
    return raw, {"key_hash": hash_key(raw), "prefix": display_prefix(raw)}


async def create_key(engine: AsyncEngine, data: KeyCreate | Mapping[str, Any]) -> CreatedKey:
    spec = _parse(KeyCreate, data)
    raw, secret_cols = _new_secret()
    now = utcnow()
    async with engine.begin() as conn:
        result = await conn.execute(
            api_keys.insert().values(
                **spec.model_dump(), **secret_cols, created_at=now, updated_at=now
            )
        )
        key_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        assert key_id is not None
        await key_changes.record(conn, secret_cols["key_hash"])  # only its negative entry
        info = await _fetch(conn, int(key_id))
    return CreatedKey(key=raw, info=info)


_NOT_NULL = ("name", "enabled", "budget_period", "response_cache")


async def update_key(
    engine: AsyncEngine, key_id: int, changes: KeyUpdate | Mapping[str, Any]
) -> KeyInfo:
    spec = _parse(KeyUpdate, changes)
    values = spec.model_dump(exclude_unset=True)
    for name in _NOT_NULL:
        if name in values and values[name] is None:
            raise Invalid(f"{name} cannot be empty")
    return await _change(engine, key_id, values)


async def set_enabled(engine: AsyncEngine, key_id: int, enabled: bool) -> KeyInfo:
    return await _change(engine, key_id, {"enabled": enabled})


async def enable_key(engine: AsyncEngine, key_id: int) -> KeyInfo:
    return await set_enabled(engine, key_id, True)


async def disable_key(engine: AsyncEngine, key_id: int) -> KeyInfo:
    return await set_enabled(engine, key_id, False)


async def rotate_key(engine: AsyncEngine, key_id: int) -> CreatedKey:
    """A new secret for the same key id: limits and usage history stay; the old secret dies."""
    raw, secret_cols = _new_secret()
    info = await _change(engine, key_id, secret_cols)
    return CreatedKey(key=raw, info=info)


async def delete_key(engine: AsyncEngine, key_id: int) -> None:
    """Removes the key; its raw usage rows keep their history with key_id set to NULL."""
    async with engine.begin() as conn:
        result = await conn.execute(
            api_keys.delete().where(api_keys.c.id == key_id).returning(api_keys.c.key_hash)
        )
        old = result.scalar()
        if old is None:
            raise NotFound(f"no key with id {key_id}")
        await key_changes.record(conn, old)


async def _change(engine: AsyncEngine, key_id: int, values: dict[str, Any]) -> KeyInfo:
    async with engine.begin() as conn:
        old = (
            await conn.execute(select(api_keys.c.key_hash).where(api_keys.c.id == key_id))
        ).scalar()
        result = await conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(**values, updated_at=utcnow())
        )
        if old is None or result.rowcount == 0:
            raise NotFound(f"no key with id {key_id}")
        # A rotation also names the new hash (it may sit in a negative cache).
        await key_changes.record(conn, *dict.fromkeys([old, values.get("key_hash", old)]))
        return await _fetch(conn, key_id)
