"""The stt core for one session: vad utterances in, one final transcript per utterance out.

Audio is buffered per open utterance (bounded in length and in number). With a streaming
primary provider (Deepgram) the audio is also streamed to it while the player speaks:
its interim hypotheses go out as partial transcripts, and its final result, moments after
vad's ``end``, becomes the final one. Without one, or when the stream fails, the buffer
is transcribed at the ``end`` by the chain of providers (the primary's own batch mode
first, then the fallbacks), each behind its circuit breaker. Exactly one final
``Transcript`` is published per utterance, with a deterministic id, so a replica that
replays the utterance after a failover publishes nothing twice.
Each transcribed utterance also publishes a ``Usage`` event (``stt_audio_seconds``, key
``stt:<utterance>``). The core knows nothing about NATS: it reads ``InputMessage``s and
control events and publishes through ``ctx.publisher``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from glyphoxa_bus.publisher import PublishError, hand_over
from glyphoxa_bus.session import InputMessage, SessionContext
from glyphoxa_bus.usage import publish_usage
from glyphoxa_campaign import Campaign
from glyphoxa_events.models import (
    Event,
    MalformedEvent,
    SessionStarted,
    Transcript,
    Usage,
    UtteranceEnded,
    UtteranceStarted,
)
from glyphoxa_runtime import tracing
from glyphoxa_runtime.providers import ProviderError
from glyphoxa_stt import metrics
from glyphoxa_stt.chain import SttChain
from glyphoxa_stt.inbound import Audio, End, Pause, Start, parse_vad_message
from glyphoxa_stt.live import LiveRecognition
from glyphoxa_stt.providers.base import SAMPLE_RATE, SttHints, SttProvider, SttResult
from glyphoxa_stt.utterances import (
    BYTES_PER_SECOND,
    EarlyTranscription,
    OpenUtterance,
    OpenUtterances,
    TooLong,
)

log = logging.getLogger("glyphoxa.stt")

MAX_TEXT = 4000


@dataclass(frozen=True)
class Limits:
    max_utterance_s: float = 30.0
    max_open_utterances: int = 16
    utterance_idle_s: float = 60.0
    language: str = "en"
    prompt_max_chars: int = 400
    stream_finish_s: float = 3.0
    """Longest wait for a streaming provider's final after vad's end (then: the buffer)."""
    partials: bool = True
    """Publish streaming providers' interim hypotheses as partial transcripts."""
    early_finals: bool = False
    """Publish the final as soon as a streaming provider hears the speaker stop (its
    endpointing), before vad's longer silence ends the utterance. Off by default: a line
    with a pause longer than the endpointing silence is then split in two lines."""
    endpoint_lag_s: float = 0.3
    """How long after speech ended the provider's endpoint comes (its endpointing silence):
    the early final's speech end is estimated from it."""
    transcribe_on_pause: bool = True
    """Without a streaming recognizer: transcribe at vad's ``pause`` and use the result at
    the end when the audio is the same (docs/contract.md)."""


def campaign_prompt(campaign: Campaign, max_chars: int = 400) -> str | None:
    """"Tabletop RPG session. NPCs: Greta, Aldric, Captain Voss." (names primed for Whisper)."""
    head = "Tabletop RPG session. NPCs: "
    kept: list[str] = []
    for name in campaign.proper_nouns():
        if len(head) + len(", ".join([*kept, name])) + 1 > max_chars:
            break
        kept.append(name)
    return f"{head}{', '.join(kept)}." if kept else None


ERRORS = {"failed": "speech recognition failed", "rejected": "utterance too long to transcribe"}


def final_transcript(ended: UtteranceEnded, result: SttResult, outcome: str = "text") -> Transcript:
    return Transcript(
        utterance_id=ended.utterance_id, speaker=ended.speaker,
        text=result.text.strip()[:MAX_TEXT], final=True, start_ns=ended.start_ns,
        speech_end_ns=ended.speech_end_ns, vad_end_ns=ended.vad_end_ns,
        stt_final_ns=time.time_ns(), audio_seconds=round(result.audio_seconds, 3),
        provider=result.provider, error=ERRORS.get(outcome, ""))


def utterance_usage(utterance_id: str, audio_seconds: float, provider: str, stage: str) -> Usage:
    """The audio of one utterance sent to the recognizer (counted once per utterance)."""
    return Usage(key=f"stt:{utterance_id}", metric="stt_audio_seconds",
                 amount=audio_seconds, provider=provider, stage=stage)


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'()").lower() for w in text.split()]


def remainder(early: str, full: str) -> str:
    """What ``full`` says after ``early`` (the words of an early final), or "" when it
    says nothing more or something else (then the early final stands)."""
    head, words = _words(early), full.split()
    if len(words) <= len(head) or _words(" ".join(words[:len(head)])) != head:
        return ""
    return " ".join(words[len(head):])


def transcript_msg_id(ctx: SessionContext, utterance_id: str, part: str = "final") -> str:
    return f"stt:{ctx.tenant}.{ctx.session}:{utterance_id}:{part}"


class SttSession:
    """``SessionHandler`` of the stt stage for one session."""

    def __init__(
        self,
        ctx: SessionContext,
        providers: SttChain | SttProvider,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ctx = ctx
        # a bare provider is this session's own already; a chain's are shared by the replica
        self._own = not isinstance(providers, SttChain)
        self._chain = SttChain([providers]) if self._own else providers  # type: ignore[list-item]
        self._limits = limits
        self._clock = clock
        self._open = OpenUtterances(limits.max_open_utterances)
        self._live: dict[str, LiveRecognition] = {}
        self._sessioned: dict[int, SttProvider] = {}
        self._aborting: set[asyncio.Task[None]] = set()
        self._max_bytes = int(limits.max_utterance_s * BYTES_PER_SECOND)
        self.prompt: str | None = None
        self.keyterms: tuple[str, ...] = ()

    @property
    def _provider(self) -> SttProvider:
        return self._chain.primary

    def _session_provider(self, provider: SttProvider) -> SttProvider:
        """The instance this session uses (a provider with per-session state makes one)."""
        if self._own:
            return provider
        if id(provider) not in self._sessioned:
            self._sessioned[id(provider)] = provider.for_session()
        return self._sessioned[id(provider)]

    async def _providers(self) -> list[SttProvider]:
        return [self._session_provider(p) for p in await self._chain.for_tenant(self._ctx.tenant)]

    # --- SessionHandler --------------------------------------------------------------------

    async def on_control(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self.prompt = campaign_prompt(event.campaign, self._limits.prompt_max_chars)
            self.keyterms = tuple(event.campaign.proper_nouns()[:100])

    async def on_message(self, msg: InputMessage) -> None:
        item = parse_vad_message(msg, self._ctx.subjects)
        if isinstance(item, Start):
            await self._start(item)
        elif isinstance(item, Audio):
            await self._audio(item)
        elif isinstance(item, Pause):
            self._pause(item)
        else:
            await self._end(item, msg.headers)

    async def on_tick(self) -> None:
        for utt in self._open.idle(self._clock(), self._limits.utterance_idle_s):
            self._abandon(utt, f"no input for {self._limits.utterance_idle_s:.0f} s")

    def tick_after_s(self) -> float | None:
        """The idle timer of open utterances counts whole seconds."""
        return 1.0 if len(self._open) else None

    def retain_from(self) -> int | None:
        return self._open.oldest_start_seq()

    async def close(self) -> None:
        for utt in self._open.all():
            self._abandon(utt, "session closed before the utterance ended")
        for live in list(self._live.values()):
            await live.abort()
        self._live.clear()

    # --- utterance life --------------------------------------------------------------------

    def _hints(self) -> SttHints:
        return SttHints(language=self._limits.language, prompt=self.prompt, keyterms=self.keyterms)

    async def _start(self, item: Start) -> None:
        utterance_id = item.event.utterance_id
        if self._open.get(utterance_id) or self._open.finished(utterance_id):
            self._reject("duplicate_utterance", f"utterance {utterance_id} started twice",
                         level=logging.INFO)
            return
        evicted = self._open.open(OpenUtterance(item.event, item.stream_seq, self._clock()))
        if evicted is not None:
            self._reject("too_many_utterances",
                         f"more than {self._limits.max_open_utterances} open utterances; "
                         f"dropping the oldest, {evicted.utterance_id}")
            self._abandon(evicted, "evicted")
        primary = (await self._providers())[0]
        if primary.capabilities.streaming and self._chain.allow(primary):
            self._live[utterance_id] = LiveRecognition(
                primary, self._hints(), self._partial_hook(item.event),
                self._limits.stream_finish_s,
                self._endpoint_hook(item.event) if self._limits.early_finals else None)

    def _endpoint_hook(self, started: UtteranceStarted):  # type: ignore[no-untyped-def]
        async def endpoint(text: str) -> None:
            """The provider heard the speaker stop: the final goes out now, not at vad's end."""
            utt = self._open.get(started.utterance_id)
            live = self._live.get(started.utterance_id)
            text = text.strip()[:MAX_TEXT]
            if (utt is None or live is None or live.finishing or live.early_text is not None
                    or not text):
                return
            live.early_text = text
            now = time.time_ns()
            transcript = Transcript(
                utterance_id=started.utterance_id, speaker=started.speaker, text=text,
                final=True, start_ns=started.start_ns,
                speech_end_ns=max(started.start_ns, now - int(self._limits.endpoint_lag_s * 1e9)),
                stt_final_ns=now, audio_seconds=round(utt.size / BYTES_PER_SECOND, 3),
                provider=live.provider.name)
            # before vad's end: this final starts the turn's trace itself
            span = self._span(transcript, None, transcript.speech_end_ns, "text", early=True)
            await self._publish(transcript, span)
            metrics.EARLY_FINALS.inc()
            log.info("final transcript on the provider's endpoint, before vad's end",
                     extra=self._ctx.log_extra(utterance=started.utterance_id,
                                               speaker=started.speaker, chars=len(text)))
        return endpoint

    def _partial_hook(self, started: UtteranceStarted):  # type: ignore[no-untyped-def]
        if not self._limits.partials:
            return None
        count = 0
        last = ""

        async def partial(text: str) -> None:
            nonlocal count, last
            text = text.strip()[:MAX_TEXT]
            if not text or text == last or self._open.finished(started.utterance_id):
                return
            count, last = count + 1, text
            transcript = Transcript(
                utterance_id=started.utterance_id, speaker=started.speaker, text=text,
                final=False, start_ns=started.start_ns, speech_end_ns=0,
                provider=self._provider.name)
            try:
                await self._ctx.publisher.publish_event(
                    self._ctx.subjects.stt(started.speaker), transcript,
                    transcript_msg_id(self._ctx, started.utterance_id, f"partial-{count}"))
            except PublishError as exc:  # a partial is worth no retry
                log.debug("partial transcript not published: %s", exc)
        return partial

    async def _audio(self, item: Audio) -> None:
        utt = self._open.get(item.utterance_id)
        if utt is None:
            self._unknown(item.utterance_id, "audio")
            return
        if utt.started.speaker != item.speaker:
            raise MalformedEvent(f"audio of {utt.utterance_id} on speaker {item.speaker!r}")
        utt.last_input = self._clock()
        if utt.early is not None and item.index > utt.early.chunks:
            utt.drop_early()  # the speaker went on after the pause: that audio is not the line
        try:
            added = utt.add(item.index, item.pcm, self._max_bytes)
        except TooLong as exc:
            utt.drop_early()
            self._reject("oversized_utterance", f"utterance {utt.utterance_id} rejected: {exc}; "
                                                "its transcript will be empty")
            live = self._live.pop(utt.utterance_id, None)
            if live is not None:
                await live.abort()
            return
        live = self._live.get(utt.utterance_id)
        if added and live is not None:
            live.send(item.pcm)

    def _pause(self, item: Pause) -> None:
        """vad says the speaker went quiet: transcribe the utterance so far now (a recognizer
        that does not stream only), so that if it ends here the transcript is ready sooner."""
        utt = self._open.get(item.utterance_id)
        if (not self._limits.transcribe_on_pause or utt is None or utt.too_long
                or utt.started.speaker != item.speaker or item.utterance_id in self._live
                or not utt.has_chunks(item.chunks)
                or (utt.early is not None and utt.early.chunks == item.chunks
                    and utt.early.tail == item.tail)):  # a redelivery
            return
        utt.drop_early()
        audio = utt.audio()
        if item.tail:
            audio = np.concatenate([audio, np.frombuffer(item.tail, dtype=np.int16)])
        task = asyncio.get_running_loop().create_task(
            self._transcribe_audio(audio, utt.utterance_id), name=f"stt-pause-{utt.utterance_id}")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # read at the end, or never
        utt.early = EarlyTranscription(item.chunks, item.tail, task)
        metrics.PAUSE_TRANSCRIPTIONS.labels("started").inc()

    async def _end(self, item: End, headers: Mapping[str, str]) -> None:
        received_ns = time.time_ns()
        ended = item.event
        utt = self._open.get(ended.utterance_id)
        if utt is None:
            self._unknown(ended.utterance_id, "end")
            return
        if utt.started.speaker != ended.speaker:
            raise MalformedEvent(f"end of {utt.utterance_id} on speaker {ended.speaker!r}")
        live = self._live.get(ended.utterance_id)
        if live is not None and live.early_text is not None:
            await self._end_after_early_final(utt, ended, live, headers, received_ns)
            return
        result, outcome = await self._result(utt, ended)
        transcript = final_transcript(ended, result, outcome)
        await self._publish(transcript, self._span(transcript, headers, received_ns, outcome))
        if outcome != "rejected":  # a rejected utterance never reached the recognizer
            await publish_usage(self._ctx.publisher, self._ctx.subjects,
                                utterance_usage(transcript.utterance_id, transcript.audio_seconds,
                                                transcript.provider, self._ctx.stage))
        self._open.finish(ended.utterance_id)
        self._record(transcript, result, outcome)

    async def _end_after_early_final(self, utt: OpenUtterance, ended: UtteranceEnded,
                                     live: LiveRecognition, headers: Mapping[str, str],
                                     received_ns: int) -> None:
        """The final went out at the provider's endpoint. If the player spoke on after it
        (a pause shorter than vad's silence), the rest is published as a continuation line
        (utterance ``<id>.2``); the utterance's audio is counted once."""
        self._live.pop(utt.utterance_id, None)
        complete = len(utt.chunks) >= ended.chunks
        result = await self._streamed(live, utt, complete)
        early = live.early_text or ""
        rest = remainder(early, result.text if result is not None else early)
        audio_s = round(utt.size / BYTES_PER_SECOND, 3)
        if rest:
            continued = Transcript(
                utterance_id=f"{ended.utterance_id}.2", speaker=ended.speaker,
                text=rest[:MAX_TEXT], final=True, start_ns=ended.start_ns,
                speech_end_ns=ended.speech_end_ns, vad_end_ns=ended.vad_end_ns,
                stt_final_ns=time.time_ns(), audio_seconds=audio_s, provider=live.provider.name)
            await self._publish(continued, self._span(continued, headers, received_ns, "text"))
        await publish_usage(self._ctx.publisher, self._ctx.subjects, utterance_usage(
            ended.utterance_id, audio_s, live.provider.name, self._ctx.stage))
        self._open.finish(ended.utterance_id)
        metrics.UTTERANCES.labels("text").inc()
        log.info("utterance transcribed", extra=self._ctx.log_extra(
            utterance=ended.utterance_id, speaker=ended.speaker, result="text", early=True,
            continued=bool(rest), audio_s=audio_s))

    async def _result(self, utt: OpenUtterance, ended: UtteranceEnded) -> tuple[SttResult, str]:
        live = self._live.pop(utt.utterance_id, None)
        if utt.too_long:
            return SttResult("", utt.size / BYTES_PER_SECOND, self._provider.name), "rejected"
        complete = len(utt.chunks) >= ended.chunks
        if not complete:
            log.warning("utterance ended with chunks missing", extra=self._ctx.log_extra(
                utterance=utt.utterance_id, received=len(utt.chunks), sent=ended.chunks))
        if live is not None:
            result = await self._streamed(live, utt, complete)
            if result is not None:
                return self._judged(result)
        early, utt.early = utt.early, None
        if early is not None:
            if early.covers(utt, ended.chunks):
                try:
                    result, outcome = await early.task
                except Exception:  # noqa: BLE001 - the audio is still here: transcribe it again
                    log.exception("transcription at the pause failed",
                                  extra=self._ctx.log_extra(utterance=utt.utterance_id))
                    outcome = "failed"
                if outcome != "failed":
                    metrics.PAUSE_TRANSCRIPTIONS.labels("used").inc()
                    return result, outcome
            early.task.cancel()
            metrics.PAUSE_TRANSCRIPTIONS.labels("not_used").inc()
        return await self._transcribe(utt)

    async def _streamed(self, live: LiveRecognition, utt: OpenUtterance,
                        complete: bool) -> SttResult | None:
        """The stream's final, if it heard the whole utterance in order and answered."""
        if not complete or list(utt.chunks) != sorted(utt.chunks):
            await live.abort()  # it missed or reordered audio: the buffer is the truth
            return None
        result = await live.finish()
        if result is not None:
            self._chain.succeeded(live.provider)
            metrics.AUDIO_SECONDS.labels(live.provider.name).inc(result.audio_seconds)
            return result
        assert live.error is not None
        self._chain.failed(live.provider, live.error)
        metrics.PROVIDER_ERRORS.labels(live.provider.name, str(live.error.retryable).lower()).inc()
        log.warning("streaming recognition failed; transcribing the buffered audio: %s",
                    live.error, extra=self._ctx.log_extra(utterance=utt.utterance_id,
                                                         provider=live.provider.name))
        return None

    @staticmethod
    def _judged(result: SttResult) -> tuple[SttResult, str]:
        if result.text.strip():
            return result, "text"
        return result, "suppressed" if result.suppressed else "empty"

    def _record(self, transcript: Transcript, result: SttResult, outcome: str) -> None:
        metrics.UTTERANCES.labels(outcome).inc()
        latency_s = (transcript.stt_final_ns - transcript.speech_end_ns) / 1e9
        if transcript.speech_end_ns and 0 <= latency_s < 60:  # a replay is not a latency
            metrics.FINAL_LATENCY.observe(latency_s)
        where = self._ctx.log_extra(utterance=transcript.utterance_id, speaker=transcript.speaker)
        log.info("utterance transcribed", extra={
            **where, "result": outcome, "audio_s": transcript.audio_seconds,
            "chars": len(transcript.text), "suppressed": result.suppressed or None})
        log.debug("transcript %r", transcript.text, extra=where)

    async def _transcribe(self, utt: OpenUtterance) -> tuple[SttResult, str]:
        """The buffered audio through the chain: each provider whose breaker allows, in turn."""
        return await self._transcribe_audio(utt.audio(), utt.utterance_id)

    async def _transcribe_audio(self, audio: np.ndarray, utterance_id: str) -> tuple[SttResult, str]:
        where = self._ctx.log_extra(utterance=utterance_id)
        tried: list[str] = []
        for provider in await self._providers():
            if not self._chain.allow(provider):
                continue
            tried.append(provider.name)
            try:
                result = await provider.transcribe(
                    audio, prompt=self.prompt, language=self._limits.language,
                    keyterms=self.keyterms)
            except ProviderError as exc:
                self._chain.failed(provider, exc)
                log.warning("transcription failed: %s", exc,
                            extra={**where, "provider": provider.name, "retryable": exc.retryable})
                continue
            self._chain.succeeded(provider)
            if len(tried) > 1:
                log.info("transcribed by a fallback provider", extra={**where, "tried": tried})
            return self._judged(result)
        log.error("no stt provider could transcribe the utterance; publishing an empty "
                  "transcript", extra={**where, "tried": tried or "none (every breaker open)"})
        return SttResult("", len(audio) / SAMPLE_RATE, self._provider.name), "failed"

    def _span(self, transcript: Transcript, parent: Mapping[str, str] | None, start_ns: int,
              outcome: str, early: bool = False) -> tracing.Span | None:
        """The final's span, continuing vad's (``parent``: the end message's headers)."""
        return tracing.record(
            "stt: final", parent, start_ns, transcript.stt_final_ns, tenant=self._ctx.tenant,
            session=self._ctx.session, turn=transcript.utterance_id, speaker=transcript.speaker,
            provider=transcript.provider, outcome=outcome, chars=len(transcript.text),
            audio_s=transcript.audio_seconds, early=early or None)

    async def _publish(self, transcript: Transcript, span: tracing.Span | None = None) -> None:
        subject = self._ctx.subjects.stt(transcript.speaker)
        msg_id = transcript_msg_id(self._ctx, transcript.utterance_id)
        # not stored: the session's outbox has the session served again from its ack floor
        await self._ctx.publisher.publish(subject, transcript.to_bytes(), msg_id,
                                          dict(tracing.context_headers(span)) or None)
        await hand_over()  # npc-brain waits for it; the usage event after it can wait

    def _abandon(self, utt: OpenUtterance, why: str) -> None:
        self._open.finish(utt.utterance_id)
        utt.drop_early()
        live = self._live.pop(utt.utterance_id, None)
        if live is not None:
            task = asyncio.get_running_loop().create_task(live.abort())
            self._aborting.add(task)
            task.add_done_callback(self._aborting.discard)
        metrics.UTTERANCES.labels("abandoned").inc()
        log.warning("utterance abandoned without a transcript: %s", why,
                    extra=self._ctx.log_extra(utterance=utt.utterance_id,
                                              speaker=utt.started.speaker))

    def _unknown(self, utterance_id: str, kind: str) -> None:
        if self._open.finished(utterance_id):
            return  # the tail of an utterance already finished (a redelivery): nothing to do
        self._reject("unknown_utterance", f"{kind} for unknown utterance {utterance_id}",
                     level=logging.INFO)

    def _reject(self, reason: str, message: str, level: int = logging.WARNING) -> None:
        self._ctx.reject(reason, message, level=level, logger=log)
