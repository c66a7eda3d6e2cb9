"""How a finished request is labelled for metrics, logs and traces: plain functions of the
usage event, shared by all three so they never disagree. No I/O, no imports beyond core."""

from __future__ import annotations

from tollway.core.types import UsageEvent

# The upstream failed, timed out, was unreachable, answered an error, or none could serve.
UPSTREAM_ERRORS = frozenset(
    {
        "upstream_error",
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_idle_timeout",
        "upstream_stream_error",
        "upstream_stream_incomplete",
        "upstream_auth_failed",
        "upstream_out_of_credit",
        "no_upstream_available",
    }
)
# Tollway itself could not serve: its own failure, a dependency down, shutting down, full.
GATEWAY_ERRORS = frozenset(
    {
        "internal_error",
        "database_unavailable",
        "limits_unavailable",
        "server_shutting_down",
        "server_busy",
    }
)
# The key's limits refused the request (limits_unavailable: Redis down, fail closed).
LIMIT_REFUSALS = frozenset(
    {
        "rate_limit_exceeded",
        "concurrency_limit_exceeded",
        "insufficient_quota",
        "limits_unavailable",
    }
)
# Everything else Tollway refuses for the client's own request or key, or the client left.
CLIENT_ERRORS = frozenset(
    {
        "invalid_api_key",
        "key_expired",
        "key_disabled",
        "too_many_invalid_keys",
        "model_not_allowed",
        "model_not_found",
        "invalid_json",
        "invalid_request",
        "request_too_large",
        "client_disconnected",
        "client_closed",
        "invalid_path",
        "rate_limit_exceeded",
        "concurrency_limit_exceeded",
        "insufficient_quota",
    }
)
# Every error type a label may carry; anything else (should not happen) is "other".
KNOWN_ERRORS = UPSTREAM_ERRORS | GATEWAY_ERRORS | CLIENT_ERRORS

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def status_class(status: int) -> str:
    return _STATUS_CLASS.get(status // 100, "other")


def error_class(event: UsageEvent) -> str:
    """`none`, `client` (refused for the client's request or key, or the client left),
    `upstream` (the upstream's failure or error answer) or `gateway` (Tollway's own)."""
    return error_class_of(event.status, event.error_type)


def error_class_of(status: int, error: str | None) -> str:
    if error is None:
        return "none" if status < 400 else "client"
    if error in UPSTREAM_ERRORS:
        return "upstream"
    if error in GATEWAY_ERRORS:
        return "gateway"
    return "client"


def error_label(error: str | None) -> str:
    if error is None:
        return "none"
    return error if error in KNOWN_ERRORS else "other"


def operation(endpoint: str) -> str | None:
    """The GenAI operation name of an OpenAI endpoint (semantic conventions), if it has one."""
    return _OPERATIONS.get(endpoint)


_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}
