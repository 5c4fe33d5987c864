"""The thin adapter between the bus and ``SessionVad``: ``audio.in`` messages in,
``vad.<speaker>`` messages and ``ctl.bargein`` out (headers and ids per docs/contract.md)."""

from __future__ import annotations

import logging
import time

from glyphoxa_bus.session import InputMessage, SessionContext
from glyphoxa_events import headers as H
from glyphoxa_events.models import BargeIn, Event, UtteranceEnded, UtteranceStarted
from glyphoxa_events.subjects import parse_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_runtime import tracing
from glyphoxa_runtime.logs import TRACE
from glyphoxa_runtime.providers import ProviderError
from glyphoxa_vad import metrics
from glyphoxa_vad.core import AudioFrame, Rejection, SessionVad
from glyphoxa_vad.segmenter import (
    Output,
    SpeechBargeIn,
    TurnCheck,
    UtteranceAudio,
    UtteranceEnd,
    UtterancePause,
    UtteranceStart,
)
from glyphoxa_vad.smart_turn import SmartTurn

log = logging.getLogger("glyphoxa.vad")

TICK_S = 0.05
"""How often an open spurt's silence is looked at when no frame arrives (Discord sends none
in silence): an end of turn is late by up to this much."""

class BadInput(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def parse_frame(msg: InputMessage, ctx: SessionContext) -> AudioFrame:
    """Check an ``audio.in`` message at the boundary; raises ``BadInput``."""
    try:
        parsed = parse_subject(msg.subject)
    except InvalidToken as exc:
        raise BadInput("invalid_token", str(exc)) from None
    if parsed.kind != "audio" or len(parsed.rest) != 2 or parsed.rest[0] != "in":
        raise BadInput("bad_subject", f"not an audio.in subject: {msg.subject[:120]!r}")
    if (parsed.tenant, parsed.session) != (ctx.tenant, ctx.session):
        raise BadInput("bad_subject", "subject of another session")
    codec = msg.headers.get(H.CODEC, H.CODEC_OPUS)
    if codec != H.CODEC_OPUS:
        raise BadInput("bad_header", f"codec {codec[:20]!r} is not opus")
    return AudioFrame(parsed.leaf, _header_int(msg, H.SEQ), _header_int(msg, H.CAPTURE_NS),
                      msg.stream_seq, msg.data)


def _header_int(msg: InputMessage, name: str) -> int:
    raw = msg.headers.get(name)
    if raw is None:
        raise BadInput("bad_header", f"missing {name}")
    try:
        value = int(raw)
    except ValueError:
        raise BadInput("bad_header", f"{name} is not an integer: {raw[:40]!r}") from None
    if not 0 <= value < 2**63:
        raise BadInput("bad_header", f"{name} out of range")
    return value


class VadSessionHandler:
    """One session of the vad stage (``glyphoxa_bus.session.SessionHandler``)."""

    def __init__(self, ctx: SessionContext, vad: SessionVad, turn_model: SmartTurn | None = None):
        self._ctx, self._vad, self._turn_model = ctx, vad, turn_model
        self._engine = vad.engine.name
        if vad.config.turn_silence_ms is not None and turn_model is None:
            raise ValueError("an end-of-turn config needs the Smart Turn model")

    async def on_control(self, event: Event) -> None:
        """vad needs no control events: session start/stop are handled by serve_session."""

    async def on_message(self, msg: InputMessage) -> None:
        try:
            frame = parse_frame(msg, self._ctx)
        except BadInput as exc:
            self._reject(Rejection(exc.reason, str(exc)), msg.subject)
            return
        if log.isEnabledFor(TRACE):
            log.log(TRACE, "frame", extra=self._ctx.log_extra(
                speaker=frame.speaker, seq=frame.seq, capture_ns=frame.capture_ns,
                bytes=len(frame.packet)))
        await self._emit(self._vad.push(frame), msg.subject)

    async def on_tick(self) -> None:
        await self._emit(self._vad.tick())

    def tick_after_s(self) -> float | None:
        return TICK_S if self._vad.timing else None

    def retain_from(self) -> int | None:
        return self._vad.retain_from()

    async def close(self) -> None:
        await self._emit(self._vad.finish())

    # --- output ----------------------------------------------------------------------------

    async def _emit(self, outputs: list[Output | Rejection] | list[Output], subject: str = "") -> None:
        for out in outputs:
            if isinstance(out, Rejection):
                self._reject(out, subject)
            elif isinstance(out, UtteranceAudio):
                await self._publish_audio(out)
            elif isinstance(out, UtteranceStart):
                await self._publish_start(out)
            elif isinstance(out, UtteranceEnd):
                await self._publish_end(out)
            elif isinstance(out, UtterancePause):
                await self._publish_pause(out)
            elif isinstance(out, SpeechBargeIn):
                await self._publish_bargein(out)
            elif isinstance(out, TurnCheck):
                await self._emit(self._vad.turn_result(out, await self._ask(out)))

    async def _ask(self, check: TurnCheck) -> float:
        """The model's answer, from its worker thread (the session's next input waits for it,
        other sessions do not). A failed run counts as "not finished": the utterance then
        ends on the longer silence."""
        assert self._turn_model is not None
        try:
            probability = await self._turn_model.probability_async(check.pcm)
        except ProviderError as exc:
            log.warning("end-of-turn model failed", extra=self._ctx.log_extra(
                utterance=check.utterance_id, speaker=check.speaker, error=str(exc)))
            return 0.0
        log.debug("end of turn asked", extra=self._ctx.log_extra(
            utterance=check.utterance_id, speaker=check.speaker, check=check.number,
            silence_ms=check.silence_ms, probability=round(probability, 3)))
        return probability

    def _msg_id(self, utterance_id: str, suffix: str) -> str:
        return f"vad:{self._ctx.tenant}.{self._ctx.session}:{utterance_id}:{suffix}"

    async def _publish_start(self, out: UtteranceStart) -> None:
        event = UtteranceStarted(utterance_id=out.utterance_id, speaker=out.speaker,
                                 start_ns=out.start_ns)
        await self._ctx.publisher.publish(
            self._ctx.subjects.vad(out.speaker), event.to_bytes(),
            self._msg_id(out.utterance_id, "start"),
            {H.KIND: "start", H.UTTERANCE: out.utterance_id})
        log.debug("utterance started", extra=self._ctx.log_extra(
            utterance=out.utterance_id, speaker=out.speaker))

    async def _publish_audio(self, out: UtteranceAudio) -> None:
        await self._ctx.publisher.publish(
            self._ctx.subjects.vad(out.speaker), out.pcm, self._msg_id(out.utterance_id, str(out.index)),
            {H.KIND: "audio", H.UTTERANCE: out.utterance_id, H.SEQ: str(out.index)})
        metrics.AUDIO_SECONDS.labels(engine=self._engine).inc(len(out.pcm) / 2 / 16_000)

    async def _publish_pause(self, out: UtterancePause) -> None:
        # its id names the point of the timeline: a replay pausing there sends the same bytes
        await self._ctx.publisher.publish(
            self._ctx.subjects.vad(out.speaker), out.tail,
            self._msg_id(out.utterance_id, f"pause-{out.chunks}-{len(out.tail)}"),
            {H.KIND: "pause", H.UTTERANCE: out.utterance_id, H.SEQ: str(out.chunks),
             H.SPEECH_END_NS: str(out.speech_end_ns)})
        metrics.PAUSES.labels(engine=self._engine).inc()

    async def _publish_end(self, out: UtteranceEnd) -> None:
        vad_end_ns = time.time_ns()
        event = UtteranceEnded(
            utterance_id=out.utterance_id, speaker=out.speaker, start_ns=out.start_ns,
            speech_end_ns=out.speech_end_ns, chunks=out.chunks, audio_ms=out.audio_ms,
            vad_end_ns=vad_end_ns)
        # the turn's trace starts here: from the end of speech to vad's decision
        span = tracing.record("vad: end of utterance", None, out.speech_end_ns, vad_end_ns,
                              tenant=self._ctx.tenant, session=self._ctx.session,
                              turn=out.utterance_id, speaker=out.speaker, reason=out.reason,
                              audio_ms=out.audio_ms)
        await self._ctx.publisher.publish(
            self._ctx.subjects.vad(out.speaker), event.to_bytes(),
            self._msg_id(out.utterance_id, "end"),
            {H.KIND: "end", H.UTTERANCE: out.utterance_id, **tracing.context_headers(span)})
        metrics.UTTERANCES.labels(engine=self._engine, reason=out.reason).inc()
        decision_s = (vad_end_ns - out.speech_end_ns) / 1e9
        if 0 <= decision_s < 60:  # a replay of old input is not a latency
            metrics.END_DECISION_SECONDS.labels(reason=out.reason).observe(decision_s)
        log.info("utterance ended", extra=self._ctx.log_extra(
            utterance=out.utterance_id, speaker=out.speaker, reason=out.reason,
            audio_ms=out.audio_ms, chunks=out.chunks, decision_ms=round(decision_s * 1000)))

    async def _publish_bargein(self, out: SpeechBargeIn) -> None:
        event = BargeIn(speaker=out.speaker, at_ns=out.at_ns)
        ctx = self._ctx
        await ctx.publisher.publish(
            ctx.subjects.ctl("bargein"), event.to_bytes(),
            f"ctl:{ctx.tenant}.{ctx.session}:bargein:{out.utterance_id}")
        metrics.BARGEINS.labels(engine=self._engine).inc()
        log.debug("barge-in", extra=ctx.log_extra(utterance=out.utterance_id, speaker=out.speaker))

    def _reject(self, rejection: Rejection, subject: str) -> None:
        self._ctx.reject(rejection.reason, rejection.detail, subject, logger=log)
