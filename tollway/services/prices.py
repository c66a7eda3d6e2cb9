"""Model prices in the database (USD per million tokens): set, list, get, delete. Every change
bumps the "prices" revision, so every instance reloads its price book within a second."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid, NotFound
from tollway.store.queries import as_utc, bump_revision, upsert, utcnow
from tollway.store.tables import model_prices

ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


def _number(v: Any) -> Any:
    # `false` or "2.5" is not a price: a 422 rather than $0 or a silent conversion.
    if isinstance(v, bool | str):
        raise ValueError("expected a number")
    return v


Rate = Annotated[float, BeforeValidator(_number), Field(ge=0, allow_inf_nan=False)]


class PriceSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    input_per_mtok: Rate
    output_per_mtok: Rate
    cached_input_per_mtok: Rate | None = None


class PriceInfo(BaseModel):
    model: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None
    updated_at: datetime


def describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _info(row: Any) -> PriceInfo:
    return PriceInfo(
        model=row.model,
        input_per_mtok=row.input_per_mtok,
        output_per_mtok=row.output_per_mtok,
        cached_input_per_mtok=row.cached_input_per_mtok,
        updated_at=as_utc(row.updated_at),
    )


async def set_price(engine: AsyncEngine, data: PriceSet | Mapping[str, Any]) -> PriceInfo:
    """Creates or replaces one model's price."""
    try:
        spec = data if isinstance(data, PriceSet) else PriceSet.model_validate(data)
    except ValidationError as exc:
        raise Invalid(describe(exc)) from None
    values = {**spec.model_dump(), "updated_at": utcnow()}
    async with engine.begin() as conn:
        stmt = upsert(conn, model_prices).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[model_prices.c.model],
            set_={k: v for k, v in values.items() if k != "model"},
        )
        await conn.execute(stmt)
        await bump_revision(conn, "prices")
        row = (
            await conn.execute(select(model_prices).where(model_prices.c.model == spec.model))
        ).one()
    return _info(row)


async def list_prices(engine: AsyncEngine) -> list[PriceInfo]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(model_prices).order_by(model_prices.c.model))).all()
    return [_info(r) for r in rows]


async def get_price(engine: AsyncEngine, model: str) -> PriceInfo:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(model_prices).where(model_prices.c.model == model))
        ).first()
    if row is None:
        raise NotFound(f"no price for model {model!r}")
    return _info(row)


async def delete_price(engine: AsyncEngine, model: str) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(model_prices.delete().where(model_prices.c.model == model))
        if result.rowcount == 0:
            raise NotFound(f"no price for model {model!r}")
        await bump_revision(conn, "prices")
