"""OpenTelemetry tracing of turns across the services (docs/tracing.md).

A turn is one trace. vad's end of an utterance is its root span; every stage continues
the trace of the message that made it work: stt's final from vad's ``end`` message, the
brain's turn from the final transcript, tts's synthesis of a sentence from its reply chunk,
the edge's playback from the turn's audio frames. The W3C ``traceparent`` of the span that
caused a message travels in the message's NATS headers (``glyphoxa_events.headers``).

Spans are made with the times the stages already record for turns.jsonl (speech end, vad
end, stt final, first token, ...), so a trace and a turn's latency breakdown agree.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set: then the SDK is not even imported, every function here returns at its first line
(``start`` gives ``None``, ``context_headers`` an empty mapping) and no header is added.
On, spans are batched and sent with OTLP over HTTP (protobuf); ``Tracing.shutdown``
flushes what is left when the process stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from glyphoxa_events import headers as H

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

TRACEPARENT = H.TRACEPARENT
TRACESTATE = H.TRACESTATE
NO_HEADERS: Mapping[str, str] = {}


class TracingSettings(BaseSettings):
    """The standard OpenTelemetry variables this project reads (the SDK reads the rest of
    ``OTEL_*`` itself: ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_SCHEDULE_DELAY``, ...)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    endpoint: str = Field(
        "", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector base URL (traces go to <url>/v1/traces); "
                    "empty: tracing off, at no cost")
    traces_endpoint: str = Field(
        "", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="full URL for traces, used as is (wins over OTEL_EXPORTER_OTLP_ENDPOINT)")

    @field_validator("endpoint", "traces_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("an OTLP/HTTP collector's URL, http:// or https:// "
                             "(e.g. http://jaeger:4318), or empty for no tracing")
        return value

    @property
    def traces_url(self) -> str:
        if self.traces_endpoint:
            return self.traces_endpoint
        if self.endpoint:
            return self.endpoint.rstrip("/") + "/v1/traces"
        return ""


_tracer: Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


@dataclass
class Tracing:
    """What ``setup`` started; ``shutdown`` exports what is left (safe when off)."""

    url: str = ""
    _provider: Any = None
    _exporter: Any = None

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        global _tracer
        provider, self._provider = self._provider, None
        if provider is None:
            return
        _tracer = None
        # the exporter's HTTP calls block: off the event loop. A flush waits for an export
        # under way, retries and all (up to 10 s), whatever its timeout: a collector that
        # does not answer within ``timeout_s`` has the exporter stopped (its retries end)
        flush = asyncio.ensure_future(asyncio.to_thread(provider.force_flush,
                                                        int(timeout_s * 1000)))
        done, _ = await asyncio.wait({flush}, timeout=timeout_s)
        if not done:
            log.warning("the trace collector did not take the last spans within %.0f s; "
                        "dropping them", timeout_s)
            self._exporter.shutdown()
        await flush
        await asyncio.to_thread(provider.shutdown)


def setup(service: str, settings: TracingSettings, instance: str = "") -> Tracing:
    """Start exporting this process's spans if an OTLP endpoint is configured; ``instance``
    (the replica's name) tells the replicas of a service apart."""
    global _tracer
    url = settings.traces_url
    if not url:
        return Tracing()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = {"service.name": service, **({"service.instance.id": instance} if instance else {})}
    provider = TracerProvider(resource=Resource.create(resource))
    exporter = OTLPSpanExporter(endpoint=url)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = provider.get_tracer("glyphoxa")
    log.info("tracing on: spans go to an OTLP/HTTP collector",
             extra={"otlp_traces_url": _shown(url)})
    return Tracing(url, provider, exporter)


def _shown(url: str) -> str:
    """The URL without credentials or query (an API key may sit in either)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def start(name: str, parent: Mapping[str, str] | None = None, start_ns: int | None = None,
          **attributes: object) -> Span | None:
    """A span named ``name`` continuing the trace in ``parent`` (a message's headers; no
    ``traceparent`` there: a new trace), started at ``start_ns`` (unix ns; now if None).
    ``None`` when tracing is off. Attributes of None value are left out; the rest are
    recorded as ``glyphoxa.<name>``."""
    tracer = _tracer
    if tracer is None:
        return None
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = Context()
    if parent and TRACEPARENT in parent:
        context = TraceContextTextMapPropagator().extract(parent, context=context)
    return tracer.start_span(name, context=context, start_time=start_ns,
                             attributes=_attributes(attributes))


def end(span: Span | None, end_ns: int | None = None, **attributes: object) -> None:
    """End ``span`` at ``end_ns`` (now if None), adding ``attributes``; no-op for None."""
    if span is None:
        return
    if attributes:
        span.set_attributes(_attributes(attributes))
    span.end(end_time=end_ns)


def record(name: str, parent: Mapping[str, str] | None, start_ns: int, end_ns: int,
           **attributes: object) -> Span | None:
    """A span whose start and end are already known (both unix ns; an end before the start,
    as a fast replay's capture times give, is moved to the start)."""
    if _tracer is None:
        return None
    span = start(name, parent, start_ns, **attributes)
    if span is not None:
        end(span, max(start_ns, end_ns))
    return span


def event(span: Span | None, name: str, at_ns: int, **attributes: object) -> None:
    """A moment within ``span`` (the first sentence of a reply, the first audio frame)."""
    if span is not None and at_ns:
        span.add_event(name, attributes=_attributes(attributes), timestamp=at_ns)


def context_headers(span: Span | None) -> Mapping[str, str]:
    """The headers that make a message's receiver continue ``span``'s trace (empty when
    tracing is off or there is no span)."""
    if span is None:
        return NO_HEADERS
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
    return carrier


def carried(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    """Just the trace headers of a received message (to hand on or keep)."""
    if not headers or _tracer is None or TRACEPARENT not in headers:
        return NO_HEADERS
    kept = {TRACEPARENT: headers[TRACEPARENT]}
    if TRACESTATE in headers:
        kept[TRACESTATE] = headers[TRACESTATE]
    return kept


def _attributes(attributes: Mapping[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if not isinstance(value, (str, bool, int, float)):
            value = str(value)
        out[f"glyphoxa.{key}"] = value
    return out
