"""The client APIs the endpoint speaks: the endpoint picks one by path, and everything that
differs between them (error shape, usage extraction, stream tracking, translation for an
upstream that speaks only the other API) comes from that one object."""

from __future__ import annotations

from tollway.core.errors import GatewayError, no_upstream
from tollway.translate.common import Untranslatable
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

from ..asgi import Headers, header
from ..body import RequestInfo
from .anthropic import ANTHROPIC, ANTHROPIC_PATHS
from .base import Api, Tracker
from .openai import OPENAI

__all__ = ["ANTHROPIC", "OPENAI", "Api", "Tracker", "for_request", "order", "prepare"]


def for_request(path: str, headers: Headers) -> Api:
    """Anthropic's routes, and the model listing when the client sends `anthropic-version`
    (Claude Code's discovery); every other path is OpenAI's."""
    if path in ANTHROPIC_PATHS:
        return ANTHROPIC
    if path.startswith("/v1/models") and header(headers, b"anthropic-version") is not None:
        return ANTHROPIC
    return OPENAI


def order(candidates: list[Upstream], info: RequestInfo) -> list[Upstream]:
    """Upstreams that speak the client's API first, then (when the request translates)
    the others; an upstream that can serve it neither way is left out."""
    api = info.api
    native = [u for u in candidates if api in u.apis]
    if info.foreign is None or len(native) == len(candidates):
        return native
    return native + [u for u in candidates if api not in u.apis]


def prepare(
    api: Api, info: RequestInfo, path: str, pool: Pool, candidates: list[Upstream]
) -> list[Upstream]:
    """Called when the pool mixes APIs or the client's is not OpenAI: translate the request
    once (for the upstreams that need it) and order the candidates."""
    info.api = api.name
    if api.translatable(path) and info.is_json:
        try:
            info.foreign = api.translate(info.parsed(), info.model or "")
        except Untranslatable as exc:
            if not any(api.name in u.apis for u in candidates):
                raise GatewayError(
                    400, exc.message, param=exc.param, code="untranslatable"
                ) from None
        info.foreign_path = api.foreign_path
    ordered = order(candidates, info)
    if ordered or not candidates:
        return ordered
    if any(api.name in u.apis for u in pool.serving(info.model)):
        raise no_upstream()
    raise GatewayError(
        400,
        f"No upstream for this model speaks the {api.title} API, and this request cannot be "
        "translated for the others.",
        code="untranslatable",
    )
