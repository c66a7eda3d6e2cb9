"""The web UI as one Starlette app, mounted by tollway.app at `/` (after /healthz and
/admin/api; `/v1/*` never reaches it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollway.core.errors import error_body
from tollway.core.settings import Settings
from tollway.services.errors import Invalid
from tollway.ui import auth
from tollway.ui.pages import (
    alerts,
    dashboard,
    keys,
    overview,
    playground,
    prices,
    upstreams,
    usage,
)
from tollway.ui.web import HERE, SECURITY_HEADERS, UI, NotReady, ui_of

if TYPE_CHECKING:
    from tollway.app import Runtime


def create_ui(settings: Settings, get_runtime: Callable[[], Runtime | None]) -> ASGIApp:
    routes = [
        Route("/login", auth.login_page, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/logout-everywhere", auth.logout_everywhere, methods=["POST"]),
        *overview.routes,
        *dashboard.routes,
        *keys.routes,
        *prices.routes,
        *upstreams.routes,
        *usage.routes,
        *alerts.routes,
        *playground.routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, NotReady: _not_ready, Invalid: _invalid},
    )
    app.state.ui = UI(settings, get_runtime)
    return _SecurityHeaders(app)


async def _not_found(request: Request, exc: Exception) -> Response:
    """Browsers get a page; API clients keep the OpenAI-style JSON error of every other path."""
    if "text/html" in request.headers.get("accept", ""):
        return ui_of(request).render(
            request,
            "error.html",
            status=404,
            title="Not found",
            message=f"Nothing lives at {request.url.path}.",
        )
    body = error_body(f"Unknown path {request.url.path}", "invalid_request_error", "not_found")
    return Response(body, status_code=404, media_type="application/json")


async def _not_ready(request: Request, exc: Exception) -> Response:
    return Response("Tollway is starting or stopping", status_code=503)


async def _invalid(request: Request, exc: Exception) -> Response:
    """A filter the services refused (bad range, bad status...): say why, keep the page."""
    message = exc.message if isinstance(exc, Invalid) else str(exc)
    return ui_of(request).render(
        request, "error.html", status=400, title="Invalid input", message=message
    )


class _SecurityHeaders:
    """CSP and friends on every UI response; pages are never cached (they can show a secret)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
