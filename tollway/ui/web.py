"""What every UI page shares: the runtime, the templates, the admin guard with CSRF checks,
and the security headers. Pages are thin: parse input, call a service, render a template."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tollway.core import fmt
from tollway.core.server_secret import BadSecretFile, server_secret
from tollway.core.settings import Settings
from tollway.services import sessions as session_service
from tollway.services.admin_secret import AdminVerifier, load_verifier
from tollway.ui import session as sessions

if TYPE_CHECKING:
    from tollway.app import Runtime

HERE = Path(__file__).parent
Handler = Callable[[Request], Awaitable[Response]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


# Where an upstream comes from, as the pool table says it (only the database's are edited here).
SOURCE_LABELS = {
    "database": "database",
    "config": "config file · read-only",
    "key_list": "key list · read-only",
    "pocketbase": "PocketBase · read-only",
}


class NotReady(Exception):
    """The gateway's lifespan has not started (or has stopped)."""


@dataclass
class UI:
    settings: Settings
    get_runtime: Callable[[], Runtime | None]
    env: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(
            num=fmt_num,
            usd=fmt_usd,
            usd_total=fmt.usd_total,
            dt=fmt_dt,
            ms=fmt_ms,
            pct=fmt_pct,
            ms_precise=fmt_ms_precise,
        )
        self.env.globals["SOURCE_LABELS"] = SOURCE_LABELS

    @property
    def runtime(self) -> Runtime:
        rt = self.get_runtime()
        if rt is None:
            raise NotReady
        return rt

    async def verifier(self) -> AdminVerifier:
        try:
            return await load_verifier(self.runtime.engine, self.settings)
        except ValueError:  # a configured secret that is too short: admin side stays off
            return AdminVerifier(None)

    def server_secret(self) -> str | None:
        try:
            return server_secret(self.settings)
        except BadSecretFile:  # the gateway refused to start on it; never sign with it
            return None

    async def signer(self) -> tuple[bytes, int] | None:
        """The session key and the current session generation; None while logging in is
        impossible (no admin secret, or no server secret to sign with)."""
        verifier = await self.verifier()
        secret = self.server_secret()
        if verifier.digest is None or secret is None:
            return None
        engine = self.runtime.engine
        return sessions.derive_key(secret, verifier.digest), await session_service.generation(
            engine
        )

    async def session(self, request: Request) -> sessions.Session | None:
        signer = await self.signer()
        if signer is None:
            return None
        return sessions.read(signer[0], request.cookies.get(sessions.COOKIE), signer[1])

    def render(
        self, request: Request, template: str, /, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        sess: sessions.Session | None = getattr(request.state, "session", None)
        html = self.env.get_template(template).render(
            path=request.url.path,
            csrf=sess.csrf if sess else "",
            logged_in=sess is not None,
            partial=request.headers.get("hx-request") == "true",
            **ctx,
        )
        return HTMLResponse(html, status_code=status)


def ui_of(request: Request) -> UI:
    ui: UI = request.app.state.ui
    return ui


# --- the guard ---------------------------------------------------------------------------------


def _same_site_path(request: Request, url: str | None) -> str | None:
    """The path and query of a URL of this host (a page's own address), else None."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.netloc != request.headers.get("host", "") or not parts.path.startswith("/"):
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def return_to(request: Request) -> str:
    """Where the user goes back to after logging in: the page they were on. An htmx call
    (`/live`, a table refresh) names its page in HX-Current-URL; a form post, in Referer."""
    if request.headers.get("hx-request") == "true":
        page = _same_site_path(request, request.headers.get("hx-current-url"))
        return page or "/"
    if request.method not in ("GET", "HEAD"):
        return _same_site_path(request, request.headers.get("referer")) or request.url.path
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _to_login(request: Request) -> Response:
    location = "/login?next=" + quote(return_to(request), safe="")
    if sessions.COOKIE in request.cookies:  # there was a session: it expired or was ended
        location += "&expired=1"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def cross_site(request: Request) -> bool:
    """A state change started by another site: refused whatever tokens it carries."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        return urlsplit(origin).netloc != host
    return False


async def presented_csrf(request: Request) -> str | None:
    token = request.headers.get("x-csrf-token")
    if token:
        return token
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get("csrf")
        return value if isinstance(value, str) else None
    return None


def admin(handler: Handler) -> Handler:
    """Only for a logged-in admin; every non-GET also needs a same-site origin and the
    session's CSRF token (form field `csrf` or header X-CSRF-Token)."""

    async def guarded(request: Request) -> Response:
        ui = ui_of(request)
        sess = await ui.session(request)
        if sess is None:
            return _to_login(request)
        request.state.session = sess
        if request.method not in ("GET", "HEAD"):
            token = await presented_csrf(request)
            if cross_site(request) or not sessions.same_token(sess.csrf, token):
                return ui.render(
                    request,
                    "error.html",
                    status=403,
                    title="Request refused",
                    message="This form was not sent from a Tollway page of this session "
                    "(missing or wrong CSRF token). Reload the page and try again.",
                )
        return await handler(request)

    guarded.__name__ = handler.__name__
    return guarded


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- formatting -----------------------------------------------------------------------------------


def fmt_num(value: float | int | None) -> str:
    return fmt.count(value)


def fmt_usd(value: float | None) -> str:
    """ "—" when unknown; small amounts with enough digits ($0.00012), as the CLI shows them."""
    return fmt.usd(value)


def fmt_dt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


def fmt_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def fmt_ms_precise(value: float | None) -> str:
    """Request timings, where a limit check takes a fraction of a millisecond."""
    if value is None:
        return "—"
    return f"{value:,.2f} ms" if value < 10 else fmt_ms(value)


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
