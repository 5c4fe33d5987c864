"""A small OTLP/HTTP trace receiver: what a collector (Jaeger, Tempo, the OpenTelemetry
Collector) gets from the services, decoded with ``opentelemetry-proto``.

It listens on an ephemeral port of 127.0.0.1 (``endpoint`` is the base URL for
``OTEL_EXPORTER_OTLP_ENDPOINT``), answers ``POST /v1/traces`` (protobuf, gzip or not) with
an empty ``ExportTraceServiceResponse`` and keeps every span it was sent.
"""

from __future__ import annotations

import gzip
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class SpanEvent:
    name: str
    at_ns: int
    attributes: dict[str, object]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the exporting process's service.name
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a trace's root
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, object]
    events: tuple[SpanEvent, ...] = field(default=())

    def attr(self, name: str) -> object:
        return self.attributes.get(f"glyphoxa.{name}")


def _value(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attributes(items: list[KeyValue]) -> dict[str, object]:
    return {kv.key: _value(kv.value) for kv in items}


def decode(body: bytes) -> list[ReceivedSpan]:
    """Every span of one OTLP/HTTP export request body."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(list(resource_spans.resource.attributes)).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(ReceivedSpan(
                    service, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                    s.start_time_unix_nano, s.end_time_unix_nano, _attributes(list(s.attributes)),
                    tuple(SpanEvent(e.name, e.time_unix_nano, _attributes(list(e.attributes)))
                          for e in s.events)))
    return spans


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.refused: list[str] = []  # what it could not take, and why
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != PROTOBUF:
                    receiver._refuse(f"{self.path} {self.headers.get('Content-Type')}")
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    spans = decode(body)
                except Exception as exc:  # noqa: BLE001 (a test wants to see it)
                    receiver._refuse(f"undecodable: {exc!r}")
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._take(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", PROTOBUF)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="otlp-receiver")

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.spans.extend(spans)
            self.requests += 1

    def _refuse(self, why: str) -> None:
        with self._lock:
            self.refused.append(why)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received so far, by trace id."""
        with self._lock:
            spans = list(self.spans)
        by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in spans:
            by_trace[span.trace_id].append(span)
        return dict(by_trace)
