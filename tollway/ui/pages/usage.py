"""Usage explorer: raw requests filtered by key, model, upstream, status, time range or request
id, newest first with keyset pages, the totals of the filtered set, the same filters as a CSV
download, and one request in full (`/usage/{request_id}`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tollway.services import keys as key_service
from tollway.services import usage as usage_service
from tollway.services.errors import Invalid, NotFound
from tollway.services.usage_models import check_range
from tollway.services.usage_records import status_filter
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
FILTER_NAMES = ("request_id", "key_id", "model", "upstream", "status", "start", "end")


def _filters(params: QueryParams) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """(the raw values to put back in the form, the service's keyword filters, an error
    message per field that could not be read: shown next to that field)."""
    raw = {name: params.get(name, "").strip() for name in FILTER_NAMES}
    errors: dict[str, str] = {}
    filters: dict[str, Any] = {
        "request_id": raw["request_id"] or None,
        "key_id": None,
        "model": raw["model"] or None,
        "upstream": raw["upstream"] or None,
        "status": raw["status"] or None,
    }
    if raw["key_id"]:
        try:
            filters["key_id"] = int(raw["key_id"])
        except ValueError:
            errors["key_id"] = "Pick a key from the list."
    if len(raw["request_id"]) > 64:
        errors["request_id"] = "A request id has at most 64 characters."
    if raw["status"]:
        try:
            status_filter(raw["status"])
        except Invalid:
            errors["status"] = "A code like 429, a class like 5xx, or ok / error."
    for name, label in (("start", "From"), ("end", "To")):
        try:
            filters[name] = forms.parse_utc(raw[name], label)
        except Invalid:
            filters[name] = None
            errors[name] = "Use a date and time, e.g. 2026-05-01 08:00."
    if "start" not in errors and "end" not in errors:
        try:
            check_range(filters["start"], filters["end"])
        except Invalid as exc:
            if "before" in exc.message:
                errors["end"] = "“To” must be after “From”."
            else:
                errors["start"] = "Use dates between 1970 and 9998."
    return raw, filters, errors


@admin
async def explorer(request: Request) -> Response:
    ui = ui_of(request)
    engine = ui.runtime.engine
    raw, filters, errors = _filters(request.query_params)
    cursor: int | None = None
    if request.query_params.get("cursor", "").isdigit():
        cursor = int(request.query_params["cursor"])
    keys = await key_service.list_keys(engine, limit=key_service.MAX_PAGE)
    models = await usage_service.by_model(engine, limit=200)
    query = {k: v for k, v in raw.items() if v}
    page = totals = None
    if not errors:
        page = await usage_service.list_records(engine, **filters, cursor=cursor, limit=PAGE_SIZE)
        totals = await usage_service.filtered_totals(engine, **filters)
    return ui.render(
        request,
        "usage.html",
        status=400 if errors else 200,
        title="Usage",
        f=raw,
        errors=errors,
        totals=totals,
        records=page.items if page else [],
        key_names={k.id: k.name for k in keys.items},
        keys=keys.items,
        models=[m.name for m in models if m.name],
        upstream_names=sorted(up.name for up in ui.runtime.pool.upstreams),
        statuses=STATUS_CHOICES,
        first_page=cursor is None,
        filtered=bool(query),
        newest_url="/usage?" + urlencode(query),
        next_url=(
            "/usage?" + urlencode({**query, "cursor": page.next_cursor})
            if page is not None and page.next_cursor is not None
            else None
        ),
        csv_url="/usage.csv?" + urlencode(query),
    )


@admin
async def detail(request: Request) -> Response:
    ui = ui_of(request)
    request_id = request.path_params["request_id"]
    try:
        rec = await usage_service.get_record(ui.runtime.engine, request_id)
    except (NotFound, Invalid) as exc:
        return ui.render(
            request,
            "error.html",
            status=404,
            title="Request not found",
            message=f"{exc.message}. Requests appear here about a second after they end.",
        )
    return ui.render(request, "usage_detail.html", title=f"Request {rec.request_id}", r=rec)


@admin
async def download(request: Request) -> Response:
    ui = ui_of(request)
    _, filters, errors = _filters(request.query_params)
    if errors:
        raise Invalid("; ".join(errors.values()))
    chunks = await usage_service.export_csv(ui.runtime.engine, **filters)
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tollway-usage.csv"'},
    )


routes = [
    Route("/usage", explorer, methods=["GET"]),
    Route("/usage.csv", download, methods=["GET"]),
    Route("/usage/{request_id}", detail, methods=["GET"]),
]
