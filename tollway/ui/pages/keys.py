"""Client keys: list with search and filters, create (secret shown once), edit,
enable/disable, rotate, delete with confirmation. Every change goes through services.keys."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollway.services import keys as key_service
from tollway.services.errors import Invalid, NotFound
from tollway.ui import forms, validate
from tollway.ui.pages import key_view
from tollway.ui.web import admin, ui_of

PAGE_SIZE = 25
DONE = {
    "saved": "Key saved.",
    "enabled": "Key enabled: it works again.",
    "disabled": "Key disabled: the gateway refuses it from now on.",
    "deleted": "Key deleted.",
}


def _key_id(request: Request) -> int:
    return int(request.path_params["key_id"])


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


@admin
async def list_keys(request: Request) -> Response:
    ui = ui_of(request)
    q = request.query_params.get("q", "").strip()
    status = request.query_params.get("status", "")
    if status not in key_service.STATUSES:
        status = ""
    page = _page_number(request)
    result = await key_service.list_keys(
        ui.runtime.engine,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        search=q or None,
        status=status or None,
    )
    pages = max(1, -(-result.total // PAGE_SIZE))
    ctx: dict[str, Any] = {
        "title": "Keys",
        "keys": result.items,
        "total": result.total,
        "q": q,
        "fstatus": status,
        "statuses": key_service.STATUSES,
        "page": page,
        "pages": pages,
        "query": lambda p: "?" + urlencode({"q": q, "fstatus": status, "page": p}),
        "done": DONE.get(request.query_params.get("done", ""), ""),
        "bars_of": key_view.bars,
    }
    if request.headers.get("hx-target") == "keys-table":
        return ui.render(request, "keys/_table.html", **ctx)
    return ui.render(request, "keys/list.html", **ctx)


def _form(request: Request, status: int = 200, **ctx: Any) -> Response:
    values = ctx.pop("values", {})
    return ui_of(request).render(
        request,
        "keys/form.html",
        status=status,
        periods=("none", "daily", "weekly", "monthly"),
        counts=(
            ("rpm", "Requests per minute"),
            ("rpd", "Requests per day"),
            ("tpm", "Tokens per minute"),
            ("tpd", "Tokens per day"),
            ("token_quota", "Token quota (total)"),
            ("max_parallel", "Parallel requests"),
        ),
        v=values,
        error=ctx.pop("error", ""),
        fe=ctx.pop("fe", {}),
        **ctx,
    )


def _refused(
    request: Request,
    exc: Exception,
    title: str,
    key: Any,
    form: Any,
    status: int = 400,
    page: dict[str, Any] | None = None,
) -> Response:
    """The form again with what was typed and a plain-word message next to each bad field."""
    fields = exc.fields if isinstance(exc, validate.FormErrors) else {}
    if isinstance(exc, Invalid):
        fields = validate.service_errors(exc.message)
    top = fields.pop("", "")
    count = len(fields)
    summary = (
        f"Please fix the {count} field{'s' if count != 1 else ''} marked below." if count else ""
    )
    return _form(
        request, status, title=title, key=key, values=dict(form), fe=fields,
        error=" ".join(x for x in (top, summary) if x), **(page or {}),
    )  # fmt: skip


def _values_of(info: key_service.KeyInfo) -> dict[str, Any]:
    values = info.model_dump()
    values["expires_at"] = forms.datetime_local(info.expires_at)
    values["models"] = ", ".join(info.models) if info.models is not None else ""
    return values


@admin
async def new_key(request: Request) -> Response:
    return _form(request, title="New key", key=None, values={"budget_period": "none"})


@admin
async def create_key(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    try:
        created = await key_service.create_key(ui.runtime.engine, validate.key_form(form))
    except (Invalid, validate.FormErrors) as exc:
        return _refused(request, exc, "New key", None, form)
    return ui.render(
        request,
        "keys/secret.html",
        title="Key created",
        created=created,
        rotated=False,
        unknown=validate.unknown_models(ui.runtime.pool, created.info.models),
    )


@admin
async def edit_key(request: Request) -> Response:
    ui = ui_of(request)
    try:
        info = await key_service.get_key(ui.runtime.engine, _key_id(request))
        page = await key_view.page_data(ui.runtime.engine, info)
    except NotFound:
        return _missing(request)
    done = DONE.get(request.query_params.get("done", ""), "")
    unknown = [m for m in request.query_params.get("unknown", "").split(",") if m][:20]
    return _form(
        request,
        title=f"Key {info.name}",
        key=info,
        values=_values_of(info),
        done=done,
        unknown=unknown,
        **page,
    )


@admin
async def update_key(request: Request) -> Response:
    ui = ui_of(request)
    key_id = _key_id(request)
    form = await request.form()
    try:
        info = await key_service.get_key(ui.runtime.engine, key_id)
        fields = validate.key_form(form, stored_expiry=info.expires_at)
        saved = await key_service.update_key(ui.runtime.engine, key_id, fields)
    except NotFound:
        return _missing(request)
    except (Invalid, validate.FormErrors) as exc:
        page = await key_view.page_data(ui.runtime.engine, info)
        return _refused(request, exc, f"Key {info.name}", info, form, page=page)
    target = f"/keys/{key_id}?done=saved"
    unknown = validate.unknown_models(ui.runtime.pool, saved.models)
    if unknown:
        target += "&" + urlencode({"unknown": ",".join(unknown)})
    return RedirectResponse(target, status_code=303)


def _back(request: Request, form: Any, done: str) -> Response:
    target = form.get("next")
    if not isinstance(target, str) or not target.startswith("/keys") or "//" in target:
        target = "/keys"
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{sep}done={done}", status_code=303)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    ui = ui_of(request)
    try:
        await key_service.set_enabled(ui.runtime.engine, _key_id(request), enabled)
    except NotFound:
        return _missing(request)
    return _back(request, await request.form(), "enabled" if enabled else "disabled")


@admin
async def enable_key(request: Request) -> Response:
    return await _set_enabled(request, True)


@admin
async def disable_key(request: Request) -> Response:
    return await _set_enabled(request, False)


@admin
async def rotate_key(request: Request) -> Response:
    ui = ui_of(request)
    try:
        created = await key_service.rotate_key(ui.runtime.engine, _key_id(request))
    except NotFound:
        return _missing(request)
    return ui.render(
        request, "keys/secret.html", title="Key rotated", created=created, rotated=True
    )


@admin
async def confirm_delete(request: Request) -> Response:
    ui = ui_of(request)
    try:
        info = await key_service.get_key(ui.runtime.engine, _key_id(request))
    except NotFound:
        return _missing(request)
    return ui.render(request, "keys/delete.html", title=f"Delete key {info.name}", key=info)


@admin
async def delete_key(request: Request) -> Response:
    ui = ui_of(request)
    try:
        await key_service.delete_key(ui.runtime.engine, _key_id(request))
    except NotFound:
        return _missing(request)
    return RedirectResponse("/keys?done=deleted", status_code=303)


def _missing(request: Request) -> Response:
    return ui_of(request).render(
        request, "error.html", status=404, title="No such key", message="That key does not exist."
    )


routes = [
    Route("/keys", list_keys, methods=["GET"]),
    Route("/keys", create_key, methods=["POST"]),
    Route("/keys/new", new_key, methods=["GET"]),
    Route("/keys/{key_id:int}", edit_key, methods=["GET"]),
    Route("/keys/{key_id:int}", update_key, methods=["POST"]),
    Route("/keys/{key_id:int}/enable", enable_key, methods=["POST"]),
    Route("/keys/{key_id:int}/disable", disable_key, methods=["POST"]),
    Route("/keys/{key_id:int}/rotate", rotate_key, methods=["POST"]),
    Route("/keys/{key_id:int}/delete", confirm_delete, methods=["GET"]),
    Route("/keys/{key_id:int}/delete", delete_key, methods=["POST"]),
]
