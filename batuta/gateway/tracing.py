"""OpenTelemetry traces of the gateway's requests (``gateway.traces: true``; the ``otel``
extra: ``pip install 'batuta[otel]'``).

One span per chat or messages request, made when the response has ended (the request path
pays nothing while it runs), with the start and end it had. Names and attributes follow
the GenAI semantic conventions: span ``chat {model}``, kind CLIENT (the gateway calling a
model on the client's behalf), ``gen_ai.operation.name``, ``gen_ai.request.model`` (as the
client sent it), ``gen_ai.request.max_tokens`` / ``temperature`` / ``top_p``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` /
``gen_ai.usage.output_tokens``, ``error.type`` (the failure class, or the HTTP status),
``http.response.status_code``; batuta's own under ``batuta.*`` (``route``, ``target``,
``key``, ``cost_usd``, ``ttft_ms``) and one ``batuta.try_failed`` event per failed try.
Prompt and answer text are never put in a span.

The exporter is OTLP over HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers), batched in a background thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from batuta.errors import BatutaError

if TYPE_CHECKING:
    from batuta.gateway.observe import Outcome

INSTALL = "pip install 'batuta[otel]'"


class TracingUnavailable(BatutaError):
    """``gateway.traces`` is on but the OpenTelemetry SDK is not installed."""


class Tracing:
    """Makes the spans; ``provider`` is an SDK ``TracerProvider`` (default: one exporting
    OTLP over HTTP, service name ``batuta-gateway``)."""

    def __init__(self, provider: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError:
            raise TracingUnavailable(
                f"gateway.traces: the OpenTelemetry SDK is not installed ({INSTALL})"
            ) from None
        if provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource({"service.name": "batuta-gateway"}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.provider = provider
        self._tracer = provider.get_tracer("batuta.gateway")
        self._kind, self._status, self._error = SpanKind.CLIENT, Status, StatusCode.ERROR

    def record(self, outcome: Outcome, record: dict[str, Any]) -> None:
        """The span of one finished request (``record`` as the request log has it)."""
        end = time.time_ns()
        start = end - int(record["total_ms"] * 1e6)
        model = outcome.model or "-"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "http.response.status_code": record["status"],
            "batuta.route": record["route"],
            "batuta.key": record["key"],
            "gen_ai.usage.input_tokens": record["tokens"]["input"],
            "gen_ai.usage.output_tokens": record["tokens"]["output"],
            "batuta.cost_usd": record["cost_usd"],
        }
        request, resp = outcome.request, outcome.resp
        if request is not None:
            for name, value in (("max_tokens", request.max_tokens),
                                ("temperature", request.temperature), ("top_p", request.top_p)):  # fmt: skip
                if value is not None:
                    attributes[f"gen_ai.request.{name}"] = value
        if resp is not None:
            attributes["batuta.target"] = resp.target
            if resp.finish_reason:
                attributes["gen_ai.response.finish_reasons"] = [resp.finish_reason]
        if record["ttft_ms"] is not None:
            attributes["batuta.ttft_ms"] = record["ttft_ms"]
        failed = [t for t in record["tried"] if t["class"] != "ok"]
        if record["status"] >= 400:
            attributes["error.type"] = failed[-1]["class"] if failed else str(record["status"])
        span = self._tracer.start_span(
            f"chat {model}", kind=self._kind, start_time=start, attributes=attributes
        )
        for step in failed:
            span.add_event("batuta.try_failed", {"batuta.target": step["target"],
                                                 "error.type": step["class"]})  # fmt: skip
        if record["status"] >= 400:
            span.set_status(self._status(self._error, str(record.get("error", "")).split("\n")[0]))
        span.end(end_time=end)

    def close(self) -> None:
        """Export what is pending, then stop."""
        self.provider.shutdown()
