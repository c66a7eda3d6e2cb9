"""What the endpoint answers when something fails that no GatewayError describes: never
uvicorn's plain-text 500. A store that cannot be reached is a 503 with Retry-After (the
client should try again shortly); anything else is a 500 `internal_error`. Both name the
request id, so an operator can find the logged traceback."""

from __future__ import annotations

import logging

from tollway.core.errors import GatewayError

log = logging.getLogger("tollway.gateway")

RETRY_AFTER = "2"  # seconds: a restarting database or Redis is usually back by then


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what caused it, and what a driver error wraps (`orig`), in order."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        for nxt in (current.__cause__, current.__context__, getattr(current, "orig", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return seen


DB_MODULES = ("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")


def _unreachable(exc: BaseException) -> str | None:
    """`database_unavailable` / `service_unavailable` when the failure is a dependency that
    cannot be reached (refused, reset, timed out, connection lost), else None."""
    causes = _causes(exc)
    lost = False
    for cause in causes:
        name = type(cause).__name__
        if (
            isinstance(cause, (OSError, TimeoutError))
            or getattr(cause, "connection_invalidated", False)
            # asyncpg's lost-connection errors and SQLAlchemy's pool timeout are no OSError.
            or (type(cause).__module__.startswith(DB_MODULES) and "Connection" in name)
            or name in ("DisconnectionError", "TimeoutError")
        ):
            lost = True
            break
    if not lost:
        return None
    if any(type(c).__module__.startswith(DB_MODULES) or _raised_in_db(c) for c in causes):
        return "database_unavailable"
    return "service_unavailable"


def _raised_in_db(exc: BaseException) -> bool:
    """Whether a database driver's code raised it (SQLAlchemy lets a refused connection's
    OSError through unwrapped)."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(DB_MODULES):
            return True
        tb = tb.tb_next
    return False


def unexpected(exc: Exception, request_id: str) -> GatewayError:
    """The client's answer for an exception the endpoint did not expect; logs it once, with
    its traceback (exception text only: no request headers, so no client key)."""
    code = _unreachable(exc)
    if code is not None:
        log.error("request %s: %s (%s)", request_id, code, type(exc).__name__, exc_info=exc)
        return GatewayError(
            503,
            f"A service Tollway depends on is unreachable; retry shortly (request {request_id}).",
            "service_unavailable_error",
            code,
            headers={"Retry-After": RETRY_AFTER},
        )
    log.error("request %s failed: %s", request_id, type(exc).__name__, exc_info=exc)
    return GatewayError(
        500,
        f"Tollway failed to handle this request (request {request_id}).",
        "server_error",
        "internal_error",
    )


def shutting_down() -> GatewayError:
    return GatewayError(
        503,
        "Tollway is shutting down; retry on another instance.",
        "service_unavailable_error",
        "server_shutting_down",
        headers={"Retry-After": RETRY_AFTER},
    )
