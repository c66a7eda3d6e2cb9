"""Login with the admin secret, logout. The session lives in a signed cookie (session.py)."""

from __future__ import annotations

import time
from collections import deque

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollway.ui import session as sessions
from tollway.ui.web import admin, cross_site, ui_of

# Failed logins per client address: a handful per window, then 429 (slows guessing to a crawl).
MAX_FAILURES = 10
FAILURE_WINDOW = 300.0
_failures: dict[str, deque[float]] = {}


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _throttled(client: str, now: float) -> bool:
    window = _failures.get(client)
    if window is None:
        return False
    while window and window[0] <= now - FAILURE_WINDOW:
        window.popleft()
    if not window:
        del _failures[client]
        return False
    return len(window) >= MAX_FAILURES


def _fail(client: str, now: float) -> None:
    if len(_failures) > 10_000:  # a flood of addresses must not grow memory without bound
        _failures.clear()
    _failures.setdefault(client, deque()).append(now)


def _safe_next(value: str | None) -> str:
    """Only a local path: never an absolute URL an attacker could slip into ?next=."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def login_page(request: Request) -> Response:
    ui = ui_of(request)
    key = await ui.session_key()
    if key is not None and sessions.read(key, request.cookies.get(sessions.COOKIE)):
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return _login_form(request, enabled=key is not None)


def _login_form(request: Request, enabled: bool, error: str = "", status: int = 200) -> Response:
    token = sessions.new_token()
    response = ui_of(request).render(
        request,
        "login.html",
        status=status,
        title="Log in",
        enabled=enabled,
        error=error,
        login_token=token,
        next=_safe_next(request.query_params.get("next")),
    )
    response.set_cookie(
        sessions.LOGIN_COOKIE,
        token,
        max_age=1800,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
    )
    return response


async def login(request: Request) -> Response:
    ui = ui_of(request)
    form = await request.form()
    token, secret = form.get("csrf"), form.get("secret")
    if (
        cross_site(request)
        or not isinstance(token, str)
        or not sessions.same_token(request.cookies.get(sessions.LOGIN_COOKIE), token)
    ):
        return _login_form(request, True, "The login form expired. Please try again.", status=403)
    verifier = await ui.verifier()
    if not verifier.enabled:
        return _login_form(request, False, status=403)
    client, now = _client(request), time.monotonic()
    if _throttled(client, now):
        return _login_form(request, True, "Too many failed attempts; wait a few minutes.", 429)
    if not isinstance(secret, str) or not verifier.check(secret):
        _fail(client, now)
        return _login_form(request, True, "That is not the admin secret.", status=401)
    key = await ui.session_key()
    assert key is not None
    value, _ = sessions.issue(key, ui.settings.ui_session_ttl)
    target = form.get("next")
    response = RedirectResponse(
        _safe_next(target if isinstance(target, str) else None), status_code=303
    )
    response.set_cookie(
        sessions.COOKIE,
        value,
        max_age=int(ui.settings.ui_session_ttl),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/login")
    return response


@admin
async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
