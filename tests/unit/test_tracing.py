"""glyphoxa_runtime.tracing: off costs nothing; on, spans reach an OTLP/HTTP receiver with
their trace carried from one message's headers to the next."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from glyphoxa_runtime import tracing
from glyphoxa_runtime.tracing import TracingSettings
from tests.support.otlp import OtlpReceiver

pytestmark = pytest.mark.unit


def test_the_endpoint_settings_follow_the_otel_conventions(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert TracingSettings().traces_url == ""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert TracingSettings().traces_url == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/otlp/v1/traces")
    assert TracingSettings().traces_url == "http://tempo:4318/otlp/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "tempo:4318")
    with pytest.raises(ValueError, match="OTLP/HTTP collector's URL"):
        TracingSettings()


def test_off_no_span_no_header_and_no_sdk_loaded():
    code = """
import sys
from glyphoxa_runtime import tracing
from glyphoxa_runtime.service import run_service
t = tracing.setup("vad", tracing.TracingSettings(_env_file=None))
span = tracing.start("vad: end of utterance", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, 5, turn="u1")
assert span is None and not tracing.enabled()
assert tracing.context_headers(span) == {} and tracing.carried({"traceparent": "x"}) == {}
tracing.end(span, 7); tracing.event(span, "first audio", 6)
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not any(m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")) for m in loaded), loaded
"""
    env = {"PATH": "/usr/bin:/bin"}  # no OTEL_* from the test's environment
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


async def test_on_spans_reach_the_receiver_with_parents_times_and_attributes():
    with OtlpReceiver() as receiver:
        traces = tracing.setup("vad", TracingSettings(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
        try:
            assert tracing.enabled()
            root = tracing.record("vad: end of utterance", None, 1_000, 2_000, tenant="acme",
                                  session="s1", turn="u1", npc=None)
            carried = tracing.context_headers(root)
            assert carried["traceparent"].startswith("00-")
            # the next stage gets the headers of a message, among others
            received = {"Glx-Kind": "end", **carried}
            assert tracing.carried(received) == carried
            child = tracing.start("stt: final", received, 3_000, turn="u1")
            tracing.event(child, "first audio", 3_500, frames=1)
            tracing.end(child, 4_000, outcome="text")
            unrelated = tracing.record("stt: final", {"Glx-Kind": "end"}, 5_000, 4_000)
        finally:
            await traces.shutdown()
        assert not tracing.enabled()
        deadline = time.monotonic() + 5
        while len(receiver.spans) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not receiver.refused
    spans = {(s.name, s.start_ns): s for s in receiver.spans}
    vad, stt, alone = spans["vad: end of utterance", 1_000], spans["stt: final", 3_000], \
        spans["stt: final", 5_000]
    assert vad.service == "vad" and vad.parent_id == "" and vad.end_ns == 2_000
    assert vad.attributes == {"glyphoxa.tenant": "acme", "glyphoxa.session": "s1",
                              "glyphoxa.turn": "u1"}
    assert stt.trace_id == vad.trace_id and stt.parent_id == vad.span_id
    assert stt.end_ns == 4_000 and stt.attr("outcome") == "text"
    assert [(e.name, e.at_ns, e.attributes) for e in stt.events] == [
        ("first audio", 3_500, {"glyphoxa.frames": 1})]
    # no traceparent: a trace of its own; an end before the start is moved to the start
    assert alone.trace_id != vad.trace_id and alone.parent_id == "" and alone.end_ns == 5_000
    assert unrelated is not None


async def test_a_collector_that_does_not_answer_holds_the_stop_up_no_longer_than_asked():
    import socket

    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    traces = tracing.setup("tts", TracingSettings(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}"))
    tracing.record("tts: sentence", None, 1_000, 2_000)
    started = time.monotonic()
    await traces.shutdown(timeout_s=1.0)
    # the exporter alone would retry for up to 10 s (its backoff), flush or no flush
    assert time.monotonic() - started < 2.5
    assert not tracing.enabled()
