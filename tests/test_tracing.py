"""Tracing: spans exported over OTLP/HTTP to a real receiver on 127.0.0.1 (a tiny HTTP server
that decodes the protobuf export request with opentelemetry-proto), one per request, with the
GenAI semantic-convention attributes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .fixtures_gateway import Stack

MSG = [{"role": "user", "content": "PROMPT-SECRET-in-a-trace?"}]


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf body."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces"
                assert self.headers["Content-Type"] == "application/x-protobuf"
                receiver._take(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def _take(self, body: bytes) -> None:
        self.bodies.append(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            self.resources.append({a.key: _value(a.value) for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "attrs": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_spans_reach_an_otlp_receiver_with_genai_attributes(
    tmp_path: Path, receiver: Receiver
) -> None:
    s = Stack(tmp_path, otel_enabled=True, otel_endpoint=receiver.url, otel_service_name="tw-test")
    try:
        ids = []
        raw = s.client().chat.completions.with_raw_response.create(model="gpt-test", messages=MSG)
        ids.append(raw.headers["x-request-id"])
        raw_alias = s.client().chat.completions.with_raw_response.create(
            model="alias-model", messages=MSG
        )
        ids.append(raw_alias.headers["x-request-id"])
        for _ in s.client().chat.completions.create(model="gpt-test", messages=MSG, stream=True):
            pass
        s.a.behaviour.mode = "error"
        s.b.behaviour.mode = "error"
        with pytest.raises(openai.InternalServerError):
            s.client().chat.completions.create(model="shared-model", messages=MSG)
    finally:
        s.stop()  # the tracer provider's shutdown exports what is pending
    spans = {sp["attrs"]["tollway.request_id"]: sp for sp in receiver.spans}
    assert len(receiver.spans) == 4 == len(spans)
    assert receiver.resources[0]["service.name"] == "tw-test"
    for body in receiver.bodies:
        assert b"PROMPT-SECRET" not in body and b"sk-upstream-SECRET" not in body
        assert s.key.encode() not in body

    chat = spans[ids[0]]
    attrs = chat["attrs"]
    assert chat["name"] == "chat gpt-test"
    assert chat["kind"] == 2  # SPAN_KIND_SERVER
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-test"
    assert attrs["gen_ai.response.model"] == "gpt-test"
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == s.a.port
    assert attrs["http.response.status_code"] == 200
    assert attrs["tollway.upstream"] == "a" and attrs["tollway.key_id"] == 1
    assert "error.type" not in attrs
    assert chat["end"] > chat["start"] > 0

    alias = spans[ids[1]]["attrs"]
    assert alias["gen_ai.request.model"] == "alias-model"
    assert alias["gen_ai.response.model"] == "gpt-test"  # the name the upstream was asked for

    stream = next(sp for sp in receiver.spans if sp["attrs"].get("gen_ai.request.stream"))
    assert stream["attrs"]["gen_ai.usage.output_tokens"] == 5
    assert "tollway.time_to_first_token_ms" in stream["attrs"]

    failed = next(sp for sp in receiver.spans if sp["attrs"]["http.response.status_code"] == 500)
    assert failed["attrs"]["error.type"] == "upstream_error"
    assert failed["status"] == 2  # STATUS_CODE_ERROR
    print(f"\ntracing: {len(receiver.spans)} spans received over OTLP/HTTP")


def test_sample_ratio_zero_records_no_span() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tollway.core.types import UsageEvent
    from tollway.observe.tracing import Tracing
    from tollway.upstreams.pool import Pool

    events = [UsageEvent(1.0, f"r{i}", 1, "POST", "/v1/embeddings", model="m") for i in range(50)]
    for ratio, expected in ((0.0, 0), (1.0, 50)):
        exporter = InMemorySpanExporter()
        tracing = Tracing(Pool(), None, "t", ratio, exporter=exporter)
        tracing.observe(events)
        tracing.close()
        spans = exporter.get_finished_spans()
        assert len(spans) == expected
        if spans:
            assert spans[0].name == "embeddings m"
