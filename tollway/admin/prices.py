"""/prices: model prices (USD per million tokens), a thin face over tollway.services.prices
and tollway.services.price_table."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response

from tollway.admin.deps import Engine, prices_changed
from tollway.services import price_table, prices
from tollway.services.errors import Invalid

router = APIRouter(prefix="/prices", tags=["prices"])

Model = Annotated[
    str, Path(min_length=1, max_length=300, description="The model name (may contain `/`).")
]


@router.get("", response_model=list[prices.PriceInfo], summary="List prices")
async def list_prices(engine: Engine) -> list[prices.PriceInfo]:
    """Prices stored in the database, by model. A model without one costs "unknown"."""
    return await prices.list_prices(engine)


@router.get("/bundled", response_model=price_table.PriceTable, summary="The bundled table")
async def bundled_table() -> price_table.PriceTable:
    """The dated list-price table shipped with Tollway (`as_of`, `source`): what
    `POST /prices/import {"bundled": true}` would import."""
    return price_table.bundled()


@router.post("", response_model=prices.PriceInfo, summary="Set a price")
async def set_price(
    request: Request, engine: Engine, spec: Annotated[prices.PriceSet, Body()]
) -> prices.PriceInfo:
    """Creates or replaces one model's price; gateways use it for the next request."""
    info = await prices.set_price(engine, spec)
    await prices_changed(request)
    return info


@router.post("/import", response_model=price_table.ImportResult, summary="Import prices")
async def import_prices(
    request: Request, engine: Engine, spec: Annotated[price_table.PriceImport, Body()]
) -> price_table.ImportResult:
    """The bundled table (`{"bundled": true}`) or your own (`{"table": {"prices": [...]}}`).
    Models already priced are kept unless `overwrite` is true."""
    if spec.bundled == (spec.table is not None):
        raise Invalid('give either "bundled": true or a "table", not both')
    table = price_table.bundled() if spec.bundled else spec.table
    assert table is not None
    result = await price_table.import_prices(engine, table, overwrite=spec.overwrite)
    await prices_changed(request)
    return result


@router.get("/{model:path}", response_model=prices.PriceInfo, summary="Get a price")
async def get_price(engine: Engine, model: Model) -> prices.PriceInfo:
    return await prices.get_price(engine, model)


@router.delete("/{model:path}", status_code=204, response_class=Response, summary="Unset a price")
async def delete_price(request: Request, engine: Engine, model: Model) -> Response:
    """The model's cost becomes unknown again (unless the config file prices it)."""
    await prices.delete_price(engine, model)
    await prices_changed(request)
    return Response(status_code=204)
