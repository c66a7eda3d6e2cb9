"""The admin API's errors, all in OpenAI's format: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from tollway.core.errors import GatewayError, error_body
from tollway.services.errors import Invalid, NotFound, ServiceError

log = logging.getLogger("tollway.admin")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _json(
    status: int,
    message: str,
    type: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(message, type, code, param),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


# The statuses every operation may answer with, documented so clients (and schemathesis)
# know their shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Body is not valid JSON"},
    401: {"model": ErrorResponse, "description": "Missing or wrong admin secret"},
    404: {"model": ErrorResponse, "description": "No such object"},
    422: {"model": ErrorResponse, "description": "Invalid parameters or body"},
    429: {"model": ErrorResponse, "description": "Too many wrong admin secrets from this address"},
    503: {"model": ErrorResponse, "description": "Admin API not configured"},
}


def _validation(exc: RequestValidationError) -> Response:
    errors = exc.errors()
    parts, param = [], None
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        param = param or (where if loc else None)
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return _json(
        422, "; ".join(parts) or "invalid request", "invalid_request_error", "invalid_value", param
    )


def _allowed(request: Request) -> str:
    """Every method the path supports (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation(exc)

    async def on_service(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        if isinstance(exc, NotFound):
            return _json(404, exc.message, "invalid_request_error", "not_found")
        code = "invalid_value" if isinstance(exc, Invalid) else "conflict"
        return _json(
            422 if isinstance(exc, Invalid) else 409, exc.message, "invalid_request_error", code
        )

    async def on_gateway(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return Response(
            exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code
        )
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = f"Unknown path {request.url.path}"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return _json(exc.status_code, message, "invalid_request_error", code, headers=headers)

    async def on_data(request: Request, exc: Exception) -> Response:
        # A value the database refuses (out of range, bad bytes): the caller's fault.
        log.info("database refused a value: %s", type(exc).__name__)
        if isinstance(exc, IntegrityError):
            return _json(
                409, "conflicts with an existing record", "invalid_request_error", "conflict"
            )
        return _json(
            422, "a value is out of range or not storable", "invalid_request_error", "invalid_value"
        )

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("admin API error on %s %s", request.method, request.url.path)
        return _json(500, "internal error", "server_error", "internal_error")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ServiceError, on_service)
    app.add_exception_handler(GatewayError, on_gateway)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(DataError, on_data)
    app.add_exception_handler(IntegrityError, on_data)
    app.add_exception_handler(Exception, on_error)
