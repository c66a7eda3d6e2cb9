"""Usage explorer: raw requests filtered by key, model, upstream, status and time range,
newest first with keyset pages, and the same filters as a CSV download."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tollway.services import keys as key_service
from tollway.services import usage as usage_service
from tollway.services.errors import Invalid
from tollway.ui import forms
from tollway.ui.web import admin, ui_of

PAGE_SIZE = 50
STATUS_CHOICES = (
    ("", "any"),
    ("ok", "ok (< 400)"),
    ("error", "error (≥ 400)"),
    ("4xx", "4xx"),
    ("5xx", "5xx"),
    ("429", "429 rate limited"),
)
FILTER_NAMES = ("key_id", "model", "upstream", "status", "start", "end")


def _filters(params: QueryParams) -> tuple[dict[str, str], dict[str, Any]]:
    """(the raw values to put back in the form, the service's keyword filters)."""
    raw = {name: params.get(name, "").strip() for name in FILTER_NAMES}
    key_id: int | None = None
    if raw["key_id"]:
        try:
            key_id = int(raw["key_id"])
        except ValueError:
            raise Invalid("key: pick one from the list") from None
    return raw, {
        "key_id": key_id,
        "model": raw["model"] or None,
        "upstream": raw["upstream"] or None,
        "status": raw["status"] or None,
        "start": forms.parse_utc(raw["start"], "From"),
        "end": forms.parse_utc(raw["end"], "To"),
    }


@admin
async def explorer(request: Request) -> Response:
    ui = ui_of(request)
    engine = ui.runtime.engine
    raw, filters = _filters(request.query_params)
    cursor: int | None = None
    if request.query_params.get("cursor", "").isdigit():
        cursor = int(request.query_params["cursor"])
    page = await usage_service.list_records(engine, **filters, cursor=cursor, limit=PAGE_SIZE)
    keys = await key_service.list_keys(engine, limit=key_service.MAX_PAGE)
    models = await usage_service.by_model(engine, limit=200)
    query = {k: v for k, v in raw.items() if v}
    names = {k.id: k.name for k in keys.items}
    return ui.render(
        request,
        "usage.html",
        title="Usage",
        f=raw,
        records=page.items,
        key_names=names,
        keys=keys.items,
        models=[m.name for m in models if m.name],
        upstream_names=sorted(up.name for up in ui.runtime.pool.upstreams),
        statuses=STATUS_CHOICES,
        first_page=cursor is None,
        newest_url="/usage?" + urlencode(query),
        next_url=(
            "/usage?" + urlencode({**query, "cursor": page.next_cursor})
            if page.next_cursor is not None
            else None
        ),
        csv_url="/usage.csv?" + urlencode(query),
    )


@admin
async def download(request: Request) -> Response:
    ui = ui_of(request)
    _, filters = _filters(request.query_params)
    chunks = await usage_service.export_csv(ui.runtime.engine, **filters)
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tollway-usage.csv"'},
    )


routes = [
    Route("/usage", explorer, methods=["GET"]),
    Route("/usage.csv", download, methods=["GET"]),
]
