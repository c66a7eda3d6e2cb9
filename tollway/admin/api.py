"""The admin REST API: a FastAPI app mounted by tollway/app.py at /admin/api.

Every route needs `Authorization: Bearer <admin secret>`; every error is in OpenAI's format.
Schema at /admin/api/openapi.json, interactive docs at /admin/api/docs.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from tollway import __version__
from tollway.admin import alerts, keys, prices, sessions, upstreams, usage
from tollway.admin.deps import RuntimeGetter, reject_unknown_query, require_admin
from tollway.admin.errors import ERROR_RESPONSES, install_error_handlers

DESCRIPTION = """Administer a running Tollway: client keys, upstreams and usage.

Authenticate every call with `Authorization: Bearer <admin secret>`: the value of
`TOLLWAY_ADMIN_SECRET`, or the secret `tollway init` printed once. Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`. Times are ISO 8601, UTC.
"""


def build_admin_api(get_runtime: RuntimeGetter) -> FastAPI:
    """`get_runtime` returns the running gateway's Runtime (None while starting/stopping)."""
    api = FastAPI(
        title="Tollway admin API",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.state.get_runtime = get_runtime
    install_error_handlers(api)
    guarded = {
        "dependencies": [Depends(require_admin), Depends(reject_unknown_query)],
        "responses": ERROR_RESPONSES,
    }
    routers = (keys.router, prices.router, upstreams.router, usage.router, sessions.router)
    for router in (*routers, alerts.router):
        api.include_router(router, **guarded)  # type: ignore[arg-type]
    return api
