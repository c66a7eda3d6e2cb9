"""OpenTelemetry spans, one per request, with the GenAI semantic-convention attributes,
exported over OTLP/HTTP (protobuf) by the SDK's batch processor thread. Built from the usage
event after the response went out (start and end times are the request's own), so the request
path does no tracing work. This module is imported only when `TOLLWAY_OTEL_ENABLED` is true:
with tracing off, opentelemetry is never imported."""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from tollway.core.types import UsageEvent
from tollway.upstreams.pool import Pool

from .classify import error_class, operation

MAX_ATTRIBUTE_CHARS = 256  # a client-chosen model name does not make a span large


class Tracing:
    def __init__(
        self,
        pool: Pool,
        endpoint: str | None,
        service_name: str,
        sample_ratio: float = 1.0,
        schedule_delay_ms: int = 1000,
        exporter: SpanExporter | None = None,  # OTLP/HTTP unless given (the benchmark's)
    ) -> None:
        self.pool = pool
        resource = Resource.create({"service.name": service_name})
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
        )
        # endpoint None: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else localhost.
        if exporter is None:
            exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms)
        )
        self.tracer = self.provider.get_tracer("tollway")
        self._servers: dict[str, tuple[str, int | None]] = {}

    def _server(self, base_url: str) -> tuple[str, int | None]:
        server = self._servers.get(base_url)
        if server is None:
            parts = urlsplit(base_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            server = self._servers[base_url] = (parts.hostname or "", port)
        return server

    def observe(self, events: list[UsageEvent]) -> None:
        for e in events:
            self._span(e)

    def _span(self, e: UsageEvent) -> None:
        op = operation(e.endpoint)
        requested = e.fallback_from or e.model
        attrs: dict[str, AttributeValue] = {
            "http.request.method": e.method,
            "url.path": e.endpoint[:MAX_ATTRIBUTE_CHARS],
            "http.response.status_code": e.status,
            "tollway.request_id": e.request_id,
            "tollway.attempts": e.attempts,
        }
        if op is not None:
            attrs["gen_ai.operation.name"] = op
        if e.key_id is not None:
            attrs["tollway.key_id"] = e.key_id
        if requested is not None:
            attrs["gen_ai.request.model"] = requested[:MAX_ATTRIBUTE_CHARS]
        if e.stream:
            attrs["gen_ai.request.stream"] = True
        up = self.pool.by_name.get(e.upstream) if e.upstream is not None else None
        if e.upstream is not None:
            attrs["tollway.upstream"] = e.upstream
        if up is not None:
            attrs["gen_ai.system"] = up.provider
            attrs["gen_ai.provider.name"] = up.provider
            host, port = self._server(up.base_url)
            attrs["server.address"] = host
            if port is not None:
                attrs["server.port"] = port
        if e.upstream_model is not None:
            attrs["gen_ai.response.model"] = e.upstream_model[:MAX_ATTRIBUTE_CHARS]
        if e.prompt_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = e.prompt_tokens
        if e.completion_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = e.completion_tokens
        if e.cost_usd is not None:
            attrs["tollway.cost_usd"] = e.cost_usd
        if e.ttft_ms is not None:
            attrs["tollway.time_to_first_token_ms"] = e.ttft_ms
        if e.fallback_from is not None:
            attrs["tollway.fallback_from"] = e.fallback_from[:MAX_ATTRIBUTE_CHARS]
        klass = error_class(e)
        if klass != "none":
            attrs["error.type"] = e.error_type or str(e.status)
        name = f"{op} {requested}" if op and requested else f"{e.method} {e.endpoint}"
        start = int(e.ts * 1e9)
        span = self.tracer.start_span(
            name[:MAX_ATTRIBUTE_CHARS], kind=SpanKind.SERVER, attributes=attrs, start_time=start
        )
        if klass in ("upstream", "gateway"):
            span.set_status(Status(StatusCode.ERROR, e.error_type or ""))
        span.end(end_time=start + int((e.latency_ms or 0.0) * 1e6))

    def close(self) -> None:
        """Exports what is pending (bounded by the SDK's export timeout), then stops."""
        self.provider.shutdown()
