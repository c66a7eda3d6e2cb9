"""Upstreams: live health and balance of every upstream in the pool (whatever its source),
a test button, balance refresh, and add/edit/remove of the upstreams kept in the database."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollway.services import upstream_tests
from tollway.services import upstreams as upstream_service
from tollway.services.errors import Invalid, NotFound
from tollway.ui import forms
from tollway.ui.web import UI, admin, ui_of
from tollway.upstreams.crypto import SecretBox, SecretKeyMissing, secret_box

PROVIDERS = ("openai", "vercel", "openrouter")
DONE = {
    "added": "Upstream added; the gateway routes to it now.",
    "saved": "Upstream saved; the gateway uses the new settings now.",
    "deleted": "Upstream removed.",
    "balance": "Balances refreshed.",
}


def _box(ui: UI) -> SecretBox:
    try:
        return secret_box(ui.settings)
    except SecretKeyMissing as exc:
        raise Invalid(str(exc)) from None


def _upstream_id(request: Request) -> int:
    return int(request.path_params["upstream_id"])


async def _status_ctx(ui: UI) -> dict[str, Any]:
    return {
        "upstreams": await upstream_service.upstream_status(ui.runtime.pool),
        "actions": True,
    }


@admin
async def list_upstreams(request: Request) -> Response:
    ui = ui_of(request)
    stored = await upstream_service.list_upstreams(ui.runtime.engine)
    return ui.render(
        request,
        "upstreams/list.html",
        title="Upstreams",
        stored=stored,
        done=DONE.get(request.query_params.get("done", ""), ""),
        **await _status_ctx(ui),
    )


@admin
async def status_fragment(request: Request) -> Response:
    ui = ui_of(request)
    return ui.render(request, "upstreams/_status.html", **await _status_ctx(ui))


@admin
async def test(request: Request) -> Response:
    """One real call to the upstream with its own key (GET /models, or a 1-token chat). The
    pool's health takes the result; the table comes back with it in the tested row."""
    ui = ui_of(request)
    form = await request.form()
    name = forms.text(form, "name")
    up = ui.runtime.pool.by_name.get(name)
    result: Any = None
    message = ""
    if up is None:
        message = f"No upstream named {name} in the pool."
    else:
        model = forms.optional_text(form, "model")
        net = upstream_service.egress_defaults(ui.runtime.settings)
        result = await upstream_tests.test_in_pool(ui.runtime.pool, up, model, net)
    tested = {"name": name, "result": result, "message": message}
    if request.headers.get("hx-request") == "true":
        return ui.render(request, "upstreams/_status.html", tested=tested, **await _status_ctx(ui))
    stored = await upstream_service.list_upstreams(ui.runtime.engine)
    return ui.render(
        request,
        "upstreams/list.html",
        title="Upstreams",
        stored=stored,
        done="",
        tested=tested,
        **await _status_ctx(ui),
    )


async def _changed(ui: UI) -> None:
    """This instance's pool takes the change at once (the table then shows it); the others
    follow the revision bump."""
    if ui.runtime.upstreams is not None:
        await ui.runtime.upstreams.reload_db()


@admin
async def refresh_balance(request: Request) -> Response:
    ui = ui_of(request)
    manager = ui.runtime.upstreams
    if manager is not None:
        name = forms.optional_text(await request.form(), "name")
        # NotFound: the upstream left the pool meanwhile; the fresh table shows that.
        with contextlib.suppress(NotFound):
            await upstream_service.refresh_balance(manager, name)
    if request.headers.get("hx-request") == "true":
        return ui.render(request, "upstreams/_status.html", **await _status_ctx(ui))
    return RedirectResponse("/upstreams?done=balance", status_code=303)


# --- database upstreams ---------------------------------------------------------------------------


def _aliases(form: FormData) -> dict[str, str]:
    """One `public = upstream` pair per line (or comma separated)."""
    out: dict[str, str] = {}
    for line in forms.text(form, "aliases").replace(",", "\n").splitlines():
        if not line.strip():
            continue
        public, sep, target = line.partition("=")
        if not sep or not public.strip() or not target.strip():
            raise Invalid(f"aliases: write each as public-name = upstream-name ({line.strip()!r})")
        out[public.strip()] = target.strip()
    return out


def _fields(form: FormData, creating: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "base_url": forms.text(form, "base_url"),
        "models": forms.name_list(form, "models"),
        "aliases": _aliases(form),
        "weight": forms.optional_float(form, "weight", "Weight"),
        "account": forms.optional_text(form, "account"),
        "provider": forms.text(form, "provider") or "openai",
        "enabled": forms.checkbox(form, "enabled"),
        "serves_modelless": forms.checkbox(form, "serves_modelless"),
        "rpm": forms.optional_int(form, "rpm", "Requests per minute"),
        "tpm": forms.optional_int(form, "tpm", "Tokens per minute"),
        "manual_balance_usd": forms.optional_float(form, "manual_balance_usd", "Balance"),
    }
    if fields["weight"] is None:
        fields["weight"] = 1.0
    key = forms.text(form, "api_key")
    if creating:
        fields["api_key"] = key or None
    elif forms.checkbox(form, "remove_key"):
        fields["api_key"] = ""
    elif key:
        fields["api_key"] = key  # empty on edit: keep the stored key
    return fields


def _values_of(info: upstream_service.UpstreamInfo) -> dict[str, Any]:
    values = info.model_dump()
    values["models"] = ", ".join(info.models) if info.models is not None else ""
    values["aliases"] = "\n".join(f"{k} = {v}" for k, v in info.aliases.items())
    values["enabled"] = "on" if info.enabled else ""
    values["serves_modelless"] = "on" if info.serves_modelless else ""
    return values


def _form(request: Request, status: int = 200, **ctx: Any) -> Response:
    return ui_of(request).render(
        request, "upstreams/form.html", status=status, providers=PROVIDERS, **ctx
    )


@admin
async def new_upstream(request: Request) -> Response:
    values = {"weight": 1.0, "provider": "openai", "enabled": "on"}
    return _form(request, title="Add upstream", up=None, v=values, error="")


@admin
async def create_upstream(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    try:
        await upstream_service.create_upstream(
            ui.runtime.engine, _fields(form, creating=True), box=_box(ui)
        )
    except Invalid as exc:
        values = {k: v for k, v in form.items() if k != "api_key"}
        return _form(request, 400, title="Add upstream", up=None, v=values, error=exc.message)
    await _changed(ui)
    return RedirectResponse("/upstreams?done=added", status_code=303)


@admin
async def edit_upstream(request: Request) -> Response:
    ui = ui_of(request)
    try:
        info = await upstream_service.get_upstream(ui.runtime.engine, _upstream_id(request))
    except NotFound:
        return _missing(request)
    return _form(request, title=f"Upstream {info.name}", up=info, v=_values_of(info), error="")


@admin
async def update_upstream(request: Request) -> Response:
    ui = ui_of(request)
    upstream_id = _upstream_id(request)
    form = await request.form()
    try:
        info = await upstream_service.get_upstream(ui.runtime.engine, upstream_id)
    except NotFound:
        return _missing(request)
    try:
        fields = _fields(form, creating=False)
        box = _box(ui) if "api_key" in fields else None
        await upstream_service.update_upstream(ui.runtime.engine, upstream_id, fields, box=box)
    except (Invalid, NotFound) as exc:
        values = {k: v for k, v in form.items() if k != "api_key"}
        return _form(
            request, 400, title=f"Upstream {info.name}", up=info, v=values, error=exc.message
        )
    await _changed(ui)
    return RedirectResponse("/upstreams?done=saved", status_code=303)


@admin
async def confirm_delete(request: Request) -> Response:
    ui = ui_of(request)
    try:
        info = await upstream_service.get_upstream(ui.runtime.engine, _upstream_id(request))
    except NotFound:
        return _missing(request)
    return ui.render(request, "upstreams/delete.html", title=f"Remove {info.name}", up=info)


@admin
async def delete_upstream(request: Request) -> Response:
    ui = ui_of(request)
    try:
        await upstream_service.delete_upstream(ui.runtime.engine, _upstream_id(request))
    except NotFound:
        return _missing(request)
    await _changed(ui)
    return RedirectResponse("/upstreams?done=deleted", status_code=303)


def _missing(request: Request) -> Response:
    return ui_of(request).render(
        request,
        "error.html",
        status=404,
        title="No such upstream",
        message="That upstream is not stored in the database.",
    )


routes = [
    Route("/upstreams", list_upstreams, methods=["GET"]),
    Route("/upstreams", create_upstream, methods=["POST"]),
    Route("/upstreams/new", new_upstream, methods=["GET"]),
    Route("/upstreams/status", status_fragment, methods=["GET"]),
    Route("/upstreams/test", test, methods=["POST"]),
    Route("/upstreams/balance", refresh_balance, methods=["POST"]),
    Route("/upstreams/{upstream_id:int}", edit_upstream, methods=["GET"]),
    Route("/upstreams/{upstream_id:int}", update_upstream, methods=["POST"]),
    Route("/upstreams/{upstream_id:int}/delete", confirm_delete, methods=["GET"]),
    Route("/upstreams/{upstream_id:int}/delete", delete_upstream, methods=["POST"]),
]
