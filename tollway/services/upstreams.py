"""Upstream administration: database upstreams (create, list, get, update, delete, test) and
the live status of every upstream in the pool, whatever its source.

Keys are stored Fernet-encrypted (tollway.upstreams.crypto) and shown only masked. Every
mutation bumps the "upstreams" revision in its own transaction; running gateways reload their
pool within a poll interval.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import aiohttp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollway.core.secrets import mask
from tollway.core.settings import get_settings
from tollway.services.errors import Invalid, NotFound
from tollway.store.queries import as_utc, bump_revision, utcnow
from tollway.store.tables import upstreams as table
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box
from tollway.upstreams.dbsource import upstream_from_row
from tollway.upstreams.egress import EgressDefaults
from tollway.upstreams.egress import egress_defaults as egress_defaults  # for admin, UI, CLI
from tollway.upstreams.headers import check_value
from tollway.upstreams.manager import UpstreamManager
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Cap = Annotated[int, Field(ge=1)]


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("base_url", check_fields=False)
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        check_value(v, "base_url")
        return v

    @field_validator("api_key", check_fields=False)
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        # It becomes a header line: a CR or LF would inject headers. Never echo the value.
        if v is not None:
            check_value(v, "api_key")
        return v

    @field_validator("models", check_fields=False)
    @classmethod
    def _models(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else sorted({m.strip() for m in v if m.strip()})


class UpstreamCreate(_Fields):
    name: Name
    base_url: str
    api_key: str | None = Field(default=None, repr=False)
    models: list[str] | None = None  # None: every model
    aliases: dict[str, str] = Field(default_factory=dict)
    weight: Weight = 1.0
    account: str | None = None
    provider: str = "openai"
    enabled: bool = True
    serves_modelless: bool = False
    rpm: Cap | None = None
    tpm: Cap | None = None
    manual_balance_usd: float | None = None


class UpstreamUpdate(_Fields):
    """Only the fields given change; api_key "" removes the key."""

    name: Name | None = None
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    models: list[str] | None = None
    aliases: dict[str, str] | None = None
    weight: Weight | None = None
    account: str | None = None
    provider: str | None = None
    enabled: bool | None = None
    serves_modelless: bool | None = None
    rpm: Cap | None = None
    tpm: Cap | None = None
    manual_balance_usd: float | None = None


class UpstreamInfo(BaseModel):
    """A database upstream as admins see it: the key only as a hint."""

    id: int
    name: str
    base_url: str
    key_hint: str | None
    models: list[str] | None
    aliases: dict[str, str]
    weight: float
    account: str | None
    provider: str
    enabled: bool
    serves_modelless: bool
    rpm: int | None
    tpm: int | None
    manual_balance_usd: float | None
    created_at: datetime
    updated_at: datetime


class ModelTrouble(BaseModel):
    """A model that failed on one upstream (5xx answers) and rests there alone."""

    model: str
    health: str  # cooldown | half_open
    cooldown_remaining_s: float
    last_error: str | None


class UpstreamStatus(BaseModel):
    """One upstream of the running pool, live."""

    name: str
    source: str  # config | key_list | pocketbase | database
    provider: str
    base_url: str
    key_hint: str | None
    account: str
    models: list[str] | None
    weight: float
    # healthy | half_open | cooldown | rate_capped | key_rejected | out_of_credit | disabled
    health: str
    cooldown_remaining_s: float
    in_flight: int
    latency_ms: float | None
    balance_usd: float | None
    balance_source: str | None  # vercel | openrouter | manual | None
    balance_checked_at: datetime | None
    balance_error: str | None
    requests: int
    failures: int
    last_error: str | None
    model_health: list[ModelTrouble] = Field(default_factory=list)  # models resting here


class UpstreamTestResult(BaseModel):
    ok: bool
    status: int | None
    latency_ms: float
    message: str


M = TypeVar("M", bound=BaseModel)
_NOT_NULL = ("name", "base_url", "weight", "provider", "enabled", "serves_modelless", "aliases")


def _parse(model: type[M], data: M | Mapping[str, Any]) -> M:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
            )
        ) from None


def _box(box: SecretBox | None) -> SecretBox:
    if box is not None:
        return box
    try:
        return secret_box(get_settings())
    except SecretKeyMissing as exc:
        raise Invalid(str(exc)) from None


def _secret_columns(api_key: str | None, box: SecretBox | None) -> dict[str, Any]:
    if not api_key:
        return {"api_key_enc": None, "extra": {}}
    return {"api_key_enc": _box(box).encrypt(api_key), "extra": {"key_hint": mask(api_key)}}


def _info(row: Any) -> UpstreamInfo:
    extra = row.extra or {}
    return UpstreamInfo(
        id=row.id,
        name=row.name,
        base_url=row.base_url,
        key_hint=extra.get("key_hint") if row.api_key_enc else None,
        models=row.models,
        aliases=row.aliases or {},
        weight=row.weight,
        account=row.account,
        provider=row.provider,
        enabled=bool(row.enabled),
        serves_modelless=bool(row.serves_modelless),
        rpm=row.rpm,
        tpm=row.tpm,
        manual_balance_usd=row.manual_balance_usd,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


async def _row(conn: AsyncConnection, upstream_id: int) -> Any:
    row = (await conn.execute(select(table).where(table.c.id == upstream_id))).first()
    if row is None:
        raise NotFound(f"no upstream with id {upstream_id}")
    return row


async def _name_taken(conn: AsyncConnection, name: str, other_than: int | None = None) -> None:
    stmt = select(table.c.id).where(table.c.name == name)
    found = (await conn.execute(stmt)).scalar()
    if found is not None and found != other_than:
        raise Invalid(f"an upstream named {name} already exists")


# --- database upstreams -------------------------------------------------------------------------


async def create_upstream(
    engine: AsyncEngine, data: UpstreamCreate | Mapping[str, Any], box: SecretBox | None = None
) -> UpstreamInfo:
    spec = _parse(UpstreamCreate, data)
    values = spec.model_dump(exclude={"api_key"})
    secret = _secret_columns(spec.api_key, box)
    now = utcnow()
    async with engine.begin() as conn:
        await _name_taken(conn, spec.name)
        result = await conn.execute(
            table.insert().values(**values, **secret, created_at=now, updated_at=now)
        )
        new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        assert new_id is not None
        await bump_revision(conn, "upstreams")
        return _info(await _row(conn, int(new_id)))


async def list_upstreams(engine: AsyncEngine) -> list[UpstreamInfo]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(table).order_by(table.c.id))).all()
    return [_info(r) for r in rows]


async def get_upstream(engine: AsyncEngine, upstream_id: int) -> UpstreamInfo:
    async with engine.connect() as conn:
        return _info(await _row(conn, upstream_id))


async def update_upstream(
    engine: AsyncEngine,
    upstream_id: int,
    changes: UpstreamUpdate | Mapping[str, Any],
    box: SecretBox | None = None,
) -> UpstreamInfo:
    spec = _parse(UpstreamUpdate, changes)
    values = spec.model_dump(exclude_unset=True, exclude={"api_key"})
    for name in _NOT_NULL:
        if name in values and values[name] is None:
            raise Invalid(f"{name} cannot be empty")
    if "api_key" in spec.model_fields_set:
        values.update(_secret_columns(spec.api_key, box))
    async with engine.begin() as conn:
        await _row(conn, upstream_id)
        if "name" in values:
            await _name_taken(conn, values["name"], upstream_id)
        await conn.execute(
            table.update().where(table.c.id == upstream_id).values(**values, updated_at=utcnow())
        )
        await bump_revision(conn, "upstreams")
        return _info(await _row(conn, upstream_id))


async def delete_upstream(engine: AsyncEngine, upstream_id: int) -> None:
    async with engine.begin() as conn:
        await _row(conn, upstream_id)
        await conn.execute(table.delete().where(table.c.id == upstream_id))
        await bump_revision(conn, "upstreams")


async def test_upstream(
    engine: AsyncEngine,
    upstream_id: int,
    box: SecretBox | None = None,
    model: str | None = None,
    wait_s: float = 20.0,
    net: EgressDefaults | None = None,
) -> UpstreamTestResult:
    """One real call with the stored key: `GET /models`, or with `model` a one-token chat."""
    async with engine.connect() as conn:
        row = await _row(conn, upstream_id)
    key = _box(box).decrypt(row.api_key_enc) if row.api_key_enc else ""
    return await call_upstream(upstream_from_row(row, key), model, wait_s, net)


async def call_upstream(
    up: Upstream,
    model: str | None = None,
    wait_s: float = 20.0,
    net: EgressDefaults | None = None,
) -> UpstreamTestResult:
    """`net`: the global CA bundle and proxy settings (the upstream's own win)."""
    headers = up.auth_headers()
    net = net or EgressDefaults()
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait_s)) as http:
            if model is None:
                url = up.models_url()
                request = http.get(url, headers=headers, **net.aiohttp_options(url, up.egress))
            else:
                body = {
                    "model": up.upstream_model(model),
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                }
                path = b"/chat/completions"
                if up.azure is not None:
                    path = up.azure.path(path, up.upstream_model(model))
                url = up.base_url + path.decode()
                options = net.aiohttp_options(url, up.egress)
                request = http.post(url, json=body, headers=headers, **options)
            async with request as resp:
                text = (await resp.read())[:2000].decode("utf-8", "replace")
                status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return UpstreamTestResult(
            ok=False,
            status=None,
            latency_ms=_ms(started),
            message=f"unreachable: {type(exc).__name__}",
        )
    if up.api_key:
        text = text.replace(up.api_key, "***")
    ok = 200 <= status < 300
    return UpstreamTestResult(
        ok=ok, status=status, latency_ms=_ms(started), message="ok" if ok else text[:300]
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


# --- the live pool ----------------------------------------------------------------------------


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


async def upstream_status(pool: Pool) -> list[UpstreamStatus]:
    """Balance, health, in-flight and latency of every upstream the gateway routes to."""
    now = pool.clock()
    out = []
    for up in pool.upstreams:
        acct = up.acct
        out.append(
            UpstreamStatus(
                name=up.name,
                source=up.source,
                provider=up.provider,
                base_url=up.base_url,
                key_hint=mask(up.api_key) if up.api_key else None,
                account=acct.name,
                models=sorted(up.models) if up.models is not None else None,
                weight=up.weight,
                health=pool.health(up),
                cooldown_remaining_s=round(max(0.0, up.cooldown_until - now), 3),
                in_flight=up.in_flight,
                latency_ms=round(up.latency_ewma_ms, 1) if up.latency_ewma_ms is not None else None,
                balance_usd=acct.available(),
                balance_source=acct.probe,
                balance_checked_at=_when(acct.checked_at),
                balance_error=acct.probe_error,
                requests=up.requests,
                failures=up.failures,
                last_error=up.last_error,
                model_health=_troubles(pool, up, now),
            )
        )
    return out


def _troubles(pool: Pool, up: Upstream, now: float) -> list[ModelTrouble]:
    return [
        ModelTrouble(
            model=model,
            health=state,
            cooldown_remaining_s=round(max(0.0, up.model_health[model].cooldown_until - now), 3),
            last_error=up.model_health[model].last_error,
        )
        for model, state in pool.model_states(up).items()
    ]


async def refresh_balance(
    manager: UpstreamManager, name: str | None = None
) -> list[UpstreamStatus]:
    """Probe now: one upstream's account, or every account; returns the fresh status."""
    accounts: set[str] | None = None
    if name is not None:
        up = manager.pool.by_name.get(name)
        if up is None:
            raise NotFound(f"no upstream named {name}")
        accounts = {up.acct.name}
    await manager.refresh_balances(accounts)
    status = await upstream_status(manager.pool)
    return status if name is None else [s for s in status if s.account in (accounts or set())]


test_upstream.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
