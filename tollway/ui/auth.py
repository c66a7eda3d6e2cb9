"""Login with the admin secret, logout, log out everywhere. The session lives in a signed
cookie (session.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollway.services import sessions as session_service
from tollway.ui import session as sessions
from tollway.ui.web import admin, cross_site, ui_of

EXPIRED_GRACE_S = 7 * 86400


def _client(request: Request) -> str:
    # The real client behind a trusted proxy (TOLLWAY_FORWARDED_ALLOW_IPS), else the peer.
    return request.client.host if request.client else "?"


def _safe_next(value: str | None) -> str:
    """Only a local path: never an absolute URL an attacker could slip into ?next=."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _resume(target: str, expired: bool) -> str:
    """After an expiry, the page is told so (ui.js then fills an interrupted form back in)."""
    if not expired:
        return target
    return target + ("&" if "?" in target else "?") + "resumed=1"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def login_page(request: Request) -> Response:
    ui = ui_of(request)
    if await ui.session(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return _login_form(request, enabled=await ui.signer() is not None)


def _login_form(
    request: Request,
    enabled: bool,
    error: str = "",
    status: int = 200,
    form: FormData | None = None,
) -> Response:
    """The form; re-rendered after a failed attempt (`form`), it keeps where it was going."""
    source: Mapping[str, Any] = form if form is not None else request.query_params
    target = source.get("next")
    token = sessions.new_token()
    response = ui_of(request).render(
        request,
        "login.html",
        status=status,
        title="Log in",
        enabled=enabled,
        error=error,
        login_token=token,
        next=_safe_next(target if isinstance(target, str) else None),
        expired=source.get("expired") == "1",
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
        return _login_form(
            request, True, "The login form expired. Please try again.", status=403, form=form
        )
    verifier = await ui.verifier()
    signer = await ui.signer()
    if not verifier.enabled or signer is None:
        return _login_form(request, False, status=403, form=form)
    client, failures = _client(request), ui.runtime.admin_failures
    if failures.retry_after(client):
        return _login_form(
            request, True, "Too many failed attempts; wait a few minutes.", 429, form=form
        )
    if not isinstance(secret, str) or not verifier.check(secret):
        failures.fail(client)
        return _login_form(request, True, "That is not the admin secret.", status=401, form=form)
    value, _ = sessions.issue(signer[0], ui.settings.ui_session_ttl, signer[1])
    target = form.get("next")
    back = _safe_next(target if isinstance(target, str) else None)
    response = RedirectResponse(_resume(back, form.get("expired") == "1"), status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        value,
        # The browser keeps the cookie a week past its signed expiry (which is what counts),
        # so an expired session is told apart from no session: "your session expired".
        max_age=int(ui.settings.ui_session_ttl) + EXPIRED_GRACE_S,
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


@admin
async def logout_everywhere(request: Request) -> Response:
    """Every session ends, on every browser and instance (copied cookies included)."""
    await session_service.revoke_all(ui_of(request).runtime.engine)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
