"""Read the request body once, and only what routing and accounting need."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from tollway.core.errors import GatewayError

from .body_head import Head, read_head
from .body_splice import model_value_span, replace_span, with_usage_option

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
    is_json: bool = False  # the body is a JSON object (see parsed())
    multipart: bool = False
    model_span: tuple[int, int] | None = None  # where the model value sits in a multipart body
    inject_usage: bool = False  # we asked the upstream for usage the client did not ask for
    api: str = "openai"  # the client's API (gateway/apis)
    # The request in the other API's format, when an upstream may need it (see apis.prepare).
    foreign: dict[str, Any] | None = None
    foreign_path: bytes = b""
    cache: CachePlan | None = None  # the response cache's plan, when the request uses it
    # The upstream gets a re-serialised body (one of each member, usage merged in), not the
    # client's bytes with edits: a routed member occurs twice, or stream_options is there
    # without include_usage.
    canonical: bool = False
    raw: bytes = b""  # the JSON body, for parsed()
    full: dict[str, Any] | None = None  # parsed() once something needed the whole body
    # Where the JSON model value sits, once a renaming upstream asked (False: not findable).
    json_model_span: tuple[int, int] | Literal[False] | None = None

    def parsed(self) -> dict[str, Any]:
        """The whole JSON body as objects, parsed on first use: the response cache and
        translation need it, plain relaying does not."""
        if self.full is None:
            data = _parse(self.raw)
            if not isinstance(data, dict):  # read_head said object; be sure
                raise GatewayError(400, "Request body must be a JSON object.", code="invalid_json")
            self.full = data
        return self.full


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, f"Request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc


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
    head = read_head(body)
    if head is None or head.repeated:  # the full parse decides (and errs) as it always did
        data = _parse(body)
        if not isinstance(data, dict):
            if ctype == b"":
                return info
            raise GatewayError(400, "Request body must be a JSON object.", code="invalid_json")
        info.full = data
        # A member may occur twice (read_head said so, or could not tell): the upstream
        # gets one of each, as parsed here.
        info.canonical = True
        head = Head(
            data.get("model"),
            data.get("stream"),
            data.get("stream_options"),
            "stream_options" in data,
        )
    info.is_json = True
    info.raw = body
    model = head.model
    if model is not None:
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "`model` must be a non-empty string.", param="model")
        info.model = model
    info.stream = head.stream is True
    if info.stream:
        options = head.stream_options
        info.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        info.inject_usage = not info.client_wants_usage and path in USAGE_OPTION_PATHS
        if info.inject_usage and head.has_stream_options:  # to be merged: rare
            info.canonical = True
            info.parsed()
    return info


def body_for(info: RequestInfo, body: bytes, upstream_model: str | None) -> bytes:
    """The bytes to send to one upstream: the client's own, unless the model is renamed for
    this upstream or usage must be requested for a stream.

    Edits go into the client's bytes (body_splice) where the text alone makes them safe;
    otherwise (and when a member occurs twice) the parsed body is re-serialised."""
    renamed = upstream_model is not None and upstream_model != info.model
    if info.is_json:
        if info.canonical:
            return _reserialised(info, upstream_model if renamed else None)
        if renamed and upstream_model is not None:
            span = _json_model_span(info, body)
            if span is None:
                return _reserialised(info, upstream_model)
            body = replace_span(body, span, orjson.dumps(upstream_model))
        return with_usage_option(body) if info.inject_usage else body
    if renamed and info.model_span is not None and upstream_model is not None:
        start, end = info.model_span
        return body[:start] + upstream_model.encode() + body[end:]
    return body


def _json_model_span(info: RequestInfo, body: bytes) -> tuple[int, int] | None:
    if info.json_model_span is None:  # looked for once per request, not once per attempt
        found = model_value_span(body, info.model) if info.model is not None else None
        info.json_model_span = found if found is not None else False
    return info.json_model_span or None


def _reserialised(info: RequestInfo, upstream_model: str | None) -> bytes:
    data = dict(info.parsed())
    if upstream_model is not None:
        data["model"] = upstream_model
    if info.inject_usage:
        options = data.get("stream_options")
        merged = dict(options) if isinstance(options, dict) else {}
        merged["include_usage"] = True
        data["stream_options"] = merged
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (255)
        raise GatewayError(
            400, f"Request body cannot be relayed: {exc}", code="invalid_json"
        ) from exc
