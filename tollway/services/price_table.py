"""The bundled price table (tollway/data/prices.json) and importing a table into the database.

The table is dated (`as_of`) and names its source in words: list prices change, so an import
is a starting point the admin owns afterwards, never refreshed behind their back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.services.errors import Invalid
from tollway.services.prices import PriceSet, describe
from tollway.store.queries import bump_revision, upsert, utcnow
from tollway.store.tables import model_prices

MAX_IMPORT = 10_000


class PriceTable(BaseModel):
    """A table to import: the bundled one, or one of your own in the same shape."""

    model_config = ConfigDict(extra="forbid")

    as_of: str | None = Field(default=None, max_length=40, description="When it was true.")
    source: str | None = Field(default=None, max_length=2000, description="Where it came from.")
    note: str | None = Field(default=None, max_length=2000)
    prices: list[PriceSet] = Field(max_length=MAX_IMPORT)


class PriceImport(BaseModel):
    """POST /admin/api/prices/import: the bundled table, or `table`."""

    model_config = ConfigDict(extra="forbid")

    bundled: bool = Field(default=False, description="Import the table shipped with Tollway.")
    table: PriceTable | None = None
    overwrite: bool = Field(
        default=False, description="Replace prices already set (default: keep them)."
    )


class ImportResult(BaseModel):
    added: list[str]
    replaced: list[str]
    kept: list[str]  # already priced, left alone (overwrite false)
    as_of: str | None
    source: str | None


@cache
def bundled() -> PriceTable:
    text = resources.files("tollway.data").joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable.model_validate(json.loads(text))


def parse_table(data: Mapping[str, Any] | list[Any]) -> PriceTable:
    """A JSON document: {"prices": [...], "as_of": ...} or a bare list of prices."""
    try:
        if isinstance(data, list):
            return PriceTable(prices=data)
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        raise Invalid(describe(exc)) from None


async def import_prices(
    engine: AsyncEngine, table: PriceTable, *, overwrite: bool = False
) -> ImportResult:
    """Adds every model of `table`; replaces the ones already priced only with `overwrite`.
    One transaction and one revision bump, so gateways reload once."""
    added: list[str] = []
    replaced: list[str] = []
    kept: list[str] = []
    latest = {p.model: p for p in table.prices}  # a model listed twice: the last one wins
    now = utcnow()
    async with engine.begin() as conn:
        existing = set((await conn.execute(select(model_prices.c.model))).scalars())
        for model, spec in sorted(latest.items()):
            if model in existing and not overwrite:
                kept.append(model)
                continue
            values = {**spec.model_dump(), "updated_at": now}
            stmt = upsert(conn, model_prices).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[model_prices.c.model],
                set_={k: v for k, v in values.items() if k != "model"},
            )
            await conn.execute(stmt)
            (replaced if model in existing else added).append(model)
        if added or replaced:
            await bump_revision(conn, "prices")
    return ImportResult(
        added=added, replaced=replaced, kept=kept, as_of=table.as_of, source=table.source
    )
