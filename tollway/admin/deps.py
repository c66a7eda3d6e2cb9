"""What every admin route needs: the running gateway's runtime and a valid admin secret."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.errors import GatewayError
from tollway.services.admin_secret import AdminVerifier, configured_secret, load_verifier

if TYPE_CHECKING:
    from tollway.app import Runtime

log = logging.getLogger("tollway.admin")

RELOAD_EVERY = 1.0  # seconds between re-reads of a stored secret after a failed check

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminSecret",
    description="`Authorization: Bearer <admin secret>` (TOLLWAY_ADMIN_SECRET or the one "
    "`tollway init` printed).",
)


def get_runtime(request: Request) -> Runtime:
    rt = request.app.state.get_runtime()
    if rt is None:
        raise GatewayError(
            503, "Tollway is starting or stopping.", "service_unavailable_error", "not_ready"
        )
    return rt  # type: ignore[no-any-return]


def unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        "invalid_request_error",
        "invalid_admin_secret",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _verifier(request: Request, rt: Runtime, *, fresh: bool) -> AdminVerifier:
    """The runtime's verifier (loaded at startup). With `fresh`, a stored secret is re-read,
    at most once a second, so one made by `tollway init` after startup works at once."""
    verifier: AdminVerifier | None = rt.admin
    if verifier is not None and (not fresh or configured_secret(rt.settings) is not None):
        return verifier
    state = request.app.state
    now = time.monotonic()
    if verifier is None or now - getattr(state, "admin_reloaded", 0.0) >= RELOAD_EVERY:
        state.admin_reloaded = now
        try:
            verifier = await load_verifier(rt.engine, rt.settings)
        except ValueError as exc:  # a configured secret that is too short
            log.error("admin API disabled: %s", exc)
            verifier = AdminVerifier(None)
        rt.admin = verifier
    return verifier


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    rt = get_runtime(request)
    presented = credentials.credentials if credentials is not None else None
    client = request.client.host if request.client else "?"  # the real one behind a proxy
    wait = rt.admin_failures.retry_after(client)
    if wait:  # refused without looking at the secret: guessing gets nowhere
        raise GatewayError(
            429,
            f"Too many wrong admin secrets from this address; try again in {wait} s.",
            "requests",
            "admin_auth_throttled",
            headers={"Retry-After": str(wait)},
        )
    verifier = await _verifier(request, rt, fresh=False)
    if verifier.check(presented):
        return
    verifier = await _verifier(request, rt, fresh=True)
    if not verifier.enabled:
        raise GatewayError(
            503,
            "The admin API has no secret: set TOLLWAY_ADMIN_SECRET or run `tollway init`.",
            "service_unavailable_error",
            "admin_disabled",
        )
    if presented is None:
        raise unauthorized("Missing admin secret: send `Authorization: Bearer <admin secret>`.")
    if not verifier.check(presented):
        rt.admin_failures.fail(client)
        raise unauthorized("Wrong admin secret.")


def reject_unknown_query(request: Request) -> None:
    """A misspelt filter (`?stauts=active`) is an error, not a silently broader answer."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in _query_params(dependant)}
    for name in request.query_params:
        if name not in known:
            raise GatewayError(
                422,
                f"unknown query parameter `{name}`",
                "invalid_request_error",
                "invalid_value",
                name[:100],
            )


def _query_params(dependant: Any) -> list[Any]:
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += _query_params(sub)
    return found


def engine_of(request: Request) -> AsyncEngine:
    return get_runtime(request).engine


Engine = Annotated[AsyncEngine, Depends(engine_of)]


async def keys_changed(request: Request) -> None:
    """This instance forgets the changed key before answering; others within a poll."""
    rt = request.app.state.get_runtime()
    if rt is not None and rt.key_changes is not None:
        try:
            await rt.key_changes.catch_up()
        except Exception:  # the change is committed; the poller catches up when it can
            log.warning("could not read key changes", exc_info=True)


RuntimeGetter = Callable[[], "Runtime | None"]


async def prices_changed(request: Request) -> None:
    """This instance's price book reloads before answering; others within a poll."""
    rt = request.app.state.get_runtime()
    if rt is not None and rt.prices is not None:
        from tollway.wiring import load_prices  # loaded with the app: a runtime exists

        try:
            rt.prices.replace(await load_prices(rt.engine, rt.settings))
        except Exception:  # the change is committed; the poller catches up when it can
            log.warning("could not reload prices", exc_info=True)
