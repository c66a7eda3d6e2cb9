"""Prices: the models' prices (USD per million tokens), set/remove one, import the bundled
dated table; models that served requests without a price are listed (their cost shows "—")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollway.services import price_table, prices
from tollway.services import usage as usage_service
from tollway.services.errors import Invalid, NotFound
from tollway.ui.web import UI, admin, ui_of

DONE = {"saved": "Price saved.", "removed": "Price removed: that model's cost is unknown again."}


async def _reload(ui: UI) -> None:
    """This instance's price book now (others follow the "prices" revision within a second)."""
    from tollway.wiring import load_prices  # loaded: the runtime exists

    rt = ui.runtime
    if rt.prices is not None:
        rt.prices.replace(await load_prices(rt.engine, rt.settings))


async def _page(request: Request, status: int = 200, **ctx: Any) -> Response:
    ui = ui_of(request)
    engine = ui.runtime.engine
    items = await prices.list_prices(engine)
    book = ui.runtime.prices
    seen = await usage_service.by_model(engine, limit=200)  # the last 30 days by default
    unpriced = [g for g in seen if g.name and (book is None or book.get(g.name) is None)]
    return ui.render(
        request,
        "prices.html",
        status=status,
        title="Prices",
        prices=items,
        unpriced=unpriced,
        bundled=price_table.bundled(),
        done=DONE.get(request.query_params.get("done", ""), ctx.pop("done", "")),
        error=ctx.pop("error", ""),
        v=ctx.pop("values", {}),
    )


@admin
async def list_prices(request: Request) -> Response:
    return await _page(request)


def _rate(form: Any, name: str) -> float | None:
    text = str(form.get(name) or "").strip().replace(",", "").removeprefix("$")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise Invalid(f"{name.replace('_', ' ')}: enter a number of dollars, like 2.50") from None


@admin
async def set_price(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    try:
        data = {
            "model": str(form.get("model") or ""),
            "input_per_mtok": _rate(form, "input_per_mtok"),
            "output_per_mtok": _rate(form, "output_per_mtok"),
            "cached_input_per_mtok": _rate(form, "cached_input_per_mtok"),
        }
        await prices.set_price(ui.runtime.engine, data)
    except Invalid as exc:
        return await _page(request, 400, error=exc.message, values=dict(form))
    await _reload(ui)
    return RedirectResponse("/prices?done=saved", status_code=303)


@admin
async def delete_price(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    try:
        await prices.delete_price(ui.runtime.engine, str(form.get("model") or ""))
    except NotFound as exc:
        return await _page(request, 404, error=exc.message)
    await _reload(ui)
    return RedirectResponse("/prices?done=removed", status_code=303)


@admin
async def import_bundled(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    table = price_table.bundled()
    result = await price_table.import_prices(
        ui.runtime.engine, table, overwrite=form.get("overwrite") == "on"
    )
    await _reload(ui)
    done = (
        f"Imported the list prices as of {table.as_of}: {len(result.added)} added, "
        f"{len(result.replaced)} replaced, {len(result.kept)} kept as they were."
    )
    return await _page(request, done=done)


routes = [
    Route("/prices", list_prices, methods=["GET"]),
    Route("/prices", set_price, methods=["POST"]),
    Route("/prices/delete", delete_price, methods=["POST"]),
    Route("/prices/import", import_bundled, methods=["POST"]),
]
