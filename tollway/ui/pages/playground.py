"""Chat playground. The page talks to the gateway's own /v1 endpoints from the browser, so a
playground chat is authenticated, limited, routed and recorded like any client's.

The key it uses is either one the admin pastes, or the admin's playground key: a key named
"Admin playground" that this page rotates on every visit (POST /playground/key, CSRF-checked)
and hands only to the logged-in admin's page, where it lives in memory.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollway.services import keys as key_service
from tollway.ui.model_catalog import catalog
from tollway.ui.web import admin, ui_of

PLAYGROUND_KEY_NAME = "Admin playground"


@admin
async def playground(request: Request) -> Response:
    return ui_of(request).render(request, "playground.html", title="Playground")


async def playground_key_secret(engine: AsyncEngine) -> str:
    """Rotate (or create) the admin's playground key and return its new secret."""
    found = await key_service.list_keys(engine, search=PLAYGROUND_KEY_NAME, limit=100)
    mine = sorted((k for k in found.items if k.name == PLAYGROUND_KEY_NAME), key=lambda k: k.id)
    if not mine:
        created = await key_service.create_key(engine, {"name": PLAYGROUND_KEY_NAME})
        return created.key
    key = mine[0]
    if not key.enabled:
        await key_service.enable_key(engine, key.id)
    return (await key_service.rotate_key(engine, key.id)).key


@admin
async def playground_key(request: Request) -> Response:
    secret = await playground_key_secret(ui_of(request).runtime.engine)
    return JSONResponse({"key": secret, "name": PLAYGROUND_KEY_NAME})


@admin
async def playground_models(request: Request) -> Response:
    """Every routable model with its kind and price (ui/model_catalog.py)."""
    rt = ui_of(request).runtime
    return JSONResponse(catalog(rt.pool, rt.prices))


routes = [
    Route("/playground/models", playground_models, methods=["GET"]),
    Route("/playground", playground, methods=["GET"]),
    Route("/playground/key", playground_key, methods=["POST"]),
]
