"""Parse the request body once, and only for what routing and accounting need."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tollway.core.errors import GatewayError

if TYPE_CHECKING:
    from .cache import CachePlan

# Endpoints whose streams accept stream_options.include_usage.
USAGE_OPTION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

# The value of the form field `model`: its part's headers, a blank line, then the value.
_MULTIPART_MODEL = re.compile(rb'; name="model"[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)\r\n')


@dataclass(slots=True)
class RequestInfo:
    model: str | None = None
    stream: bool = False
    client_wants_usage: bool = False
    json: dict[str, Any] | None = None  # parsed JSON body, when it was JSON
    multipart: bool = False
    model_span: tuple[int, int] | None = None  # where the model value sits in a multipart body
    inject_usage: bool = False  # we asked the upstream for usage the client did not ask for
    api: str = "openai"  # the client's API (gateway/apis)
    # The request in the other API's format, when an upstream may need it (see apis.prepare).
    foreign: dict[str, Any] | None = None
    foreign_path: bytes = b""
    cache: CachePlan | None = None  # the response cache's plan, when the request uses it


def inspect(path: str, content_type: bytes | None, body: bytes) -> RequestInfo:
    info = RequestInfo()
    if not body:
        return info
    ctype = (content_type or b"").split(b";", 1)[0].strip().lower()
    if ctype == b"multipart/form-data":
        info.multipart = True
        match = _MULTIPART_MODEL.search(body)
        if match:
            info.model = match.group(1).decode("utf-8", "replace")
            info.model_span = match.span(1)
        return info
    if ctype not in (b"application/json", b""):
        return info
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, f"Request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(data, dict):
        if ctype == b"":
            return info
        raise GatewayError(400, "Request body must be a JSON object.", code="invalid_json")
    info.json = data
    model = data.get("model")
    if model is not None:
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "`model` must be a non-empty string.", param="model")
        info.model = model
    info.stream = data.get("stream") is True
    if info.stream:
        options = data.get("stream_options")
        info.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        info.inject_usage = not info.client_wants_usage and path in USAGE_OPTION_PATHS
    return info


def body_for(info: RequestInfo, body: bytes, upstream_model: str | None) -> bytes:
    """The bytes to send to one upstream: the client's own, unless the model is renamed for
    this upstream or usage must be requested for a stream."""
    renamed = upstream_model is not None and upstream_model != info.model
    if info.json is not None and (renamed or info.inject_usage):
        data = dict(info.json)
        if renamed:
            data["model"] = upstream_model
        if info.inject_usage:
            options = data.get("stream_options")
            merged = dict(options) if isinstance(options, dict) else {}
            merged["include_usage"] = True
            data["stream_options"] = merged
        return orjson.dumps(data)
    if renamed and info.model_span is not None and upstream_model is not None:
        start, end = info.model_span
        return body[:start] + upstream_model.encode() + body[end:]
    return body
