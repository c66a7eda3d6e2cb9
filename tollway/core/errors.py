"""Errors in OpenAI's format: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    """An error the client should see, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def invalid_api_key(message: str = "Invalid API key provided.") -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or no upstream serves it.",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def model_not_allowed(model: str) -> GatewayError:
    return GatewayError(
        403,
        f"This API key is not allowed to use the model `{model}`.",
        "permission_error",
        "model_not_allowed",
        "model",
    )


def no_upstream(message: str = "No upstream is available to serve this request.") -> GatewayError:
    return GatewayError(503, message, "service_unavailable_error", "no_upstream_available")


def upstream_timeout() -> GatewayError:
    return GatewayError(
        504, "The upstream did not answer in time.", "timeout_error", "upstream_timeout"
    )


def upstream_unreachable(message: str = "Could not reach any upstream.") -> GatewayError:
    return GatewayError(502, message, "upstream_error", "upstream_unreachable")
