"""OpenTelemetry traces (``gateway.traces: true``): one span per request with the GenAI
semantic-convention attributes, exported over OTLP/HTTP to a collector fake that decodes
what it receives with the OTLP protobuf schema, as a real collector would."""

from __future__ import annotations

import sys
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

from batuta.gateway.observe import ObserveSettings
from batuta.gateway.tracing import Tracing, TracingUnavailable
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes

HI = [{"role": "user", "content": "secret prompt text"}]


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf in, protobuf out."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path != "/v1/traces" or (
                    self.headers["content-type"] != "application/x-protobuf"
                ):
                    self.send_response(415 if self.path == "/v1/traces" else 404)
                    self.end_headers()
                    return
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                collector.requests.append(message)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    found = Collector()
    found.thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.url)
    yield found
    found.server.shutdown()
    found.server.server_close()


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            [v.string_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return out


def test_spans_carry_the_genai_attributes_and_reach_the_collector(
    tmp_path: Path, collector: Collector
) -> None:
    with OpenAIFake() as a, OpenAIFake() as b:
        table = write_routes(tmp_path, route_of("default", local("a", a), local("b", b)),
                             route_of("solo", local("a", a)))  # fmt: skip
        gw = GatewayThread(table, observe=ObserveSettings(traces=True)).start()
        try:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            a.fail_next(503)
            sdk.chat.completions.create(model="default", messages=HI, max_tokens=50,
                                        temperature=0.5)  # fmt: skip
            a.fail_next(500)
            with pytest.raises(openai.APIStatusError):
                sdk.chat.completions.create(model="solo", messages=HI)
        finally:
            gw.stop()  # the lifespan's shutdown flushes the batch to the collector
    ok, failed = sorted(collector.spans(), key=lambda s: s.start_time_unix_nano)
    assert ok.name == "chat default" and ok.kind == 3  # SPAN_KIND_CLIENT
    got = attrs(ok)
    assert got["gen_ai.operation.name"] == "chat" and got["gen_ai.request.model"] == "default"
    assert got["gen_ai.request.max_tokens"] == 50 and got["gen_ai.request.temperature"] == 0.5
    assert got["gen_ai.usage.output_tokens"] > 0 and got["gen_ai.usage.input_tokens"] > 0
    assert got["gen_ai.response.finish_reasons"] == ["stop"]
    assert got["batuta.route"] == "default" and got["batuta.target"] == "b"
    assert got["http.response.status_code"] == 200 and "error.type" not in got
    assert [(e.name, attrs(e)) for e in ok.events] == [
        ("batuta.try_failed", {"batuta.target": "a", "error.type": "overloaded"})
    ]
    assert ok.end_time_unix_nano > ok.start_time_unix_nano
    assert attrs(failed)["error.type"] == "server" and failed.status.code == 2  # ERROR
    assert "every target failed" in failed.status.message
    resource = {kv.key: kv.value.string_value
                for kv in collector.requests[0].resource_spans[0].resource.attributes}  # fmt: skip
    assert resource["service.name"] == "batuta-gateway"
    assert b"secret prompt text" not in b"".join(r.SerializeToString() for r in collector.requests)


def test_traces_without_the_sdk_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(TracingUnavailable, match=r"pip install 'batuta\[otel\]'"):
        Tracing()
