"""The tts core for one session: reply sentences in, 20 ms opus frames and ``AudioDone`` out.

Knows nothing about NATS: it reads ``InputMessage``s and control events and publishes
through ``ctx.publisher``. Each sentence is synthesized as soon as it arrives, and its
frames are published as soon as they are encoded (first-audio latency is what players
notice): a turn's first frame alone, the rest in messages of up to ``TTS_FRAMES_PER_MESSAGE``
(1 by default) of the frames made from one piece of the synthesizer's audio (``glyphoxa_events.frames``:
a message costs the same whatever it carries, and the frames play slower than they are
made); the characters sent to the synthesizer are published as ``Usage`` (key
``tts:<turn>:<chunk index>``). A barge-in or flush cancels the turn being spoken at once:
control runs on its own subscription and interrupts the synthesis task.

With ``BRAIN_SPECULATE`` the brain also sends the first sentence of a reply it guessed from
an interim transcript as a held chunk (``hold``): it is synthesized at once in the
background, but nothing is published. When the final transcript confirms the guess, the
turn's first chunk ``claims`` it and its frames go out at once, under the turn's id; a
wrong guess is discarded by the held turn's empty chunk, and an unclaimed one expires
after ``TTS_HELD_TTL_S``. A claim that finds nothing held is synthesized as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from glyphoxa_bus.publisher import PublishError
from glyphoxa_bus.session import InputMessage, SessionContext
from glyphoxa_bus.usage import publish_usage
from glyphoxa_campaign import Campaign
from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_events import frames as F
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    Event,
    Flush,
    MalformedEvent,
    ReplyChunk,
    SessionStarted,
    SessionStopped,
    Usage,
    parse_as,
)
from glyphoxa_events.subjects import parse_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_runtime import tracing
from glyphoxa_runtime.logs import TRACE
from glyphoxa_runtime.providers import ProviderError
from glyphoxa_runtime.recent import Recent
from glyphoxa_tts import metrics
from glyphoxa_tts.config import Settings
from glyphoxa_tts.frames import FrameEncoder
from glyphoxa_tts.providers import ProviderSet, TTSProvider
from glyphoxa_tts.turns import Held, Turn

log = logging.getLogger("glyphoxa.tts")

MAX_OPEN_TURNS = 16
MAX_HELD = 8
BATCHED_FRAMES = 10
"""``TTS_FRAMES_PER_MESSAGE`` for batches: 200 ms of audio a message at most, ~10x fewer
messages than frames. A pump turn still encodes one frame (a batch goes out with the turn
that fills it): with 10 encodes a turn, other sessions' first frames waited ~1-2 ms for
them (docs/benchmarks.md 9f, 9g)."""


async def encoded(provider: TTSProvider, text: str, voice: VoiceSpec,
                  encoder: FrameEncoder) -> AsyncIterator[Iterable[bytes]]:
    """``text`` spoken by ``provider``, as 20 ms opus frames from ``encoder`` (flushed at the
    end): per piece of audio the provider gives, its frames, each encoded as the caller
    asks for it."""
    async with contextlib.aclosing(provider.synthesize(text, voice)) as audio:
        async for pcm in audio:
            yield encoder.push(pcm)
    yield encoder.finish()


class TtsSession:
    """The ``SessionHandler`` of the tts stage for one session."""

    def __init__(self, ctx: SessionContext, providers: ProviderSet, settings: Settings,
                 pump: asyncio.Lock | None = None):
        self._ctx, self._providers, self._settings = ctx, providers, settings
        self._pump = pump or asyncio.Lock()  # the process's: one reply's message at a time
        self._campaign: Campaign | None = ctx.started.campaign if ctx.started else None
        self._open: dict[str, Turn] = {}
        self._finished: Recent[str, None] = Recent()  # AudioDone published (by us or a previous replica)
        self._flushed: Recent[str, None] = Recent()  # flushed before any of their chunks arrived
        self._speaking: tuple[Turn, asyncio.Task[None]] | None = None
        self._held: dict[str, Held] = {}
        self._held_over: Recent[str, None] = Recent()  # claimed, discarded or expired: a replay skips them

    # --- control ------------------------------------------------------------------------

    async def on_control(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self._campaign = event.campaign
        elif isinstance(event, AudioDone):
            self._finished.remember(event.turn_id)
        elif isinstance(event, Flush):
            # A raw ctl.bargein is not a cancel: only the edge knows whether an NPC is
            # audible, and it flushes when a player talks over one (ADR 0003).
            await self._flush(event)
        elif isinstance(event, SessionStopped):  # nobody is listening any more
            for turn in list(self._open.values()):
                await self._close(turn, cancelled=True, reason="session ended")

    async def _flush(self, event: Flush) -> None:
        if event.turn_id is not None:
            turn = self._open.get(event.turn_id)
            if turn is not None:
                await self._close(turn, cancelled=True, reason=f"flush: {event.reason}")
            elif event.turn_id not in self._finished:
                self._flushed.remember(event.turn_id)
            return
        for turn in list(self._open.values()):
            if event.npc is None or event.npc == turn.npc:
                await self._close(turn, cancelled=True, reason=f"flush: {event.reason}")

    # --- input --------------------------------------------------------------------------

    async def on_message(self, msg: InputMessage) -> None:
        chunk = self._parse(msg)
        voice = self._voice_of(chunk)
        if voice is None:
            return
        if chunk.hold:
            await self._on_held(chunk, voice)
            return
        held = await self._claimed(chunk)
        try:
            await self._on_chunk(msg, chunk, voice, held)
        finally:
            if held is not None:  # stops its synthesis if the turn was flushed meanwhile
                await self._end_held(held, "claimed")

    async def _on_chunk(self, msg: InputMessage, chunk: ReplyChunk, voice: VoiceSpec,
                        held: Held | None) -> None:
        if chunk.turn_id in self._finished:
            log.debug("chunk of a finished turn dropped", extra=self._extra(chunk.turn_id))
            metrics.SENTENCES_DROPPED.labels(reason="turn_done").inc()
            return
        received_ns = time.time_ns()
        turn = self._open.get(chunk.turn_id) or await self._open_turn(chunk, msg.stream_seq)
        if turn.closed:  # cancelled a moment ago; its AudioDone is on the way
            metrics.SENTENCES_DROPPED.labels(reason="turn_done").inc()
            return
        turn.written_ns = chunk.published_ns
        if await self._ended_if_stale(turn, self._not_current(turn)):
            return
        if chunk.turn_id in self._flushed:
            self._flushed.pop(chunk.turn_id, None)
            await self._close(turn, cancelled=True, reason="flushed before it started")
            return
        turn.last_chunk = time.monotonic()
        turn.speech_end_ns = chunk.speech_end_ns or turn.speech_end_ns
        if len(chunk.text) > self._settings.max_chars:
            self._reject("oversized", f"reply chunk of {len(chunk.text)} characters exceeds "
                         f"TTS_MAX_CHARS={self._settings.max_chars}; not spoken", chunk.turn_id)
        elif chunk.text.strip():
            await self._traced_speak(turn, chunk, voice, held, msg.headers, received_ns)
            if await self._ended_if_stale(turn, turn.stale):  # paused mid-sentence
                return
        if chunk.final:
            await self._close(turn, cancelled=False, reason="final")

    def _not_current(self, turn: Turn) -> str:
        """Why the turn must not be heard any more ("" when it may): the session ended, or
        its audio would come too long after the player's line it answers (the line waited
        out a broker outage) or after npc-brain wrote the sentence (this replica was paused
        or overloaded, or took the session over late), beyond the audio of the turn already
        sent: the table has moved on. (Capture times of a fast scene replay run ahead of
        the wall clock, which only makes the first check more lenient.)"""
        if self._ctx.stopped is not None:
            return "session ended"
        now, sent_s = time.time_ns(), turn.frames * 0.02
        for origin_ns, bound_s, what, setting in (
                (turn.speech_end_ns, self._settings.line_stale_after_s,
                 "the line it answers ended", "TTS_LINE_STALE_AFTER_S"),
                (turn.written_ns, self._settings.stale_after_s,
                 "npc-brain wrote it", "TTS_STALE_AFTER_S")):
            waited_s = (now - origin_ns) / 1e9 if origin_ns else 0.0
            if waited_s > bound_s + sent_s:
                return (f"stale: its audio would start {waited_s:.1f} s after {what} "
                        f"({setting}={bound_s:g})")
        return ""

    async def _ended_if_stale(self, turn: Turn, why: str) -> bool:
        if not why:
            return False
        metrics.SENTENCES_DROPPED.labels(reason=why.partition(":")[0].replace(" ", "_")).inc()
        await self._close(turn, cancelled=True, reason=why)
        return True

    def _parse(self, msg: InputMessage) -> ReplyChunk:
        chunk = parse_as(ReplyChunk, msg.data)
        try:
            npc = parse_subject(msg.subject).leaf
        except InvalidToken as exc:
            raise MalformedEvent(str(exc)) from None
        if npc != chunk.npc:
            raise MalformedEvent(f"chunk for npc {chunk.npc!r} on the subject of {npc!r}")
        return chunk

    def _voice_of(self, chunk: ReplyChunk) -> VoiceSpec | None:
        npc = self._campaign.npc(chunk.npc) if self._campaign else None
        if npc is None:
            self._reject("unknown_npc", f"no NPC {chunk.npc!r} in this session's campaign",
                         chunk.turn_id)
            return None
        return npc.voice

    async def _open_turn(self, chunk: ReplyChunk, stream_seq: int) -> Turn:
        if len(self._open) >= MAX_OPEN_TURNS:
            oldest = min(self._open.values(), key=lambda t: t.last_chunk)
            await self._close(oldest, cancelled=True, reason="too many open turns")
        turn = Turn(chunk.turn_id, chunk.npc, stream_seq, chunk.speech_end_ns,
                    FrameEncoder(self._settings.opus_bitrate))
        self._open[turn.turn_id] = turn
        return turn

    # --- speaking -----------------------------------------------------------------------

    async def _traced_speak(self, turn: Turn, chunk: ReplyChunk, voice: VoiceSpec,
                            held: Held | None, parent: Mapping[str, str],
                            received_ns: int) -> None:
        """``_speak`` in a span continuing the reply chunk's trace; its frames carry it."""
        turn.span = tracing.start(
            "tts: sentence", parent, received_ns, tenant=self._ctx.tenant,
            session=self._ctx.session, turn=chunk.turn_id, npc=chunk.npc, index=chunk.index,
            chars=len(chunk.text), held=held is not None or None)
        turn.trace = tracing.context_headers(turn.span)
        frames_before = turn.frames
        try:
            await self._speak(turn, chunk, voice, held)
        finally:
            tracing.end(turn.span, frames=turn.frames - frames_before)
            turn.span, turn.trace = None, tracing.NO_HEADERS

    async def _speak(self, turn: Turn, chunk: ReplyChunk, voice: VoiceSpec,
                     held: Held | None = None) -> None:
        """Speak one sentence in a task a barge-in can cancel mid-synthesis."""
        task = asyncio.create_task(self._synthesize(turn, chunk, voice, held),
                                   name=f"tts-speak-{turn.turn_id}")
        self._speaking = (turn, task)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the session itself is stopping
            # cancelled by a barge-in/flush: _close publishes the turn's AudioDone
        finally:
            self._speaking = None

    async def _synthesize(self, turn: Turn, chunk: ReplyChunk, voice: VoiceSpec,
                          held: Held | None = None) -> None:
        if held is not None:
            frames_before = turn.frames
            await self._play_held(turn, held)
            if not (held.failed and turn.frames == frames_before):
                return  # its characters were counted under the held turn's key
            # the held synthesis failed before any audio: speak the sentence afresh
        provider = await self._providers.for_voice(voice, self._ctx.tenant)
        spoke = provider
        try:
            spoke = await self._synthesize_with(turn, chunk.text, voice, provider)
        finally:
            # after the audio, off the first-frame path; once per chunk: a fallback or a
            # replica redoing the turn repeats the key (a cancelled chunk was sent all the same)
            await publish_usage(self._ctx.publisher, self._ctx.subjects, Usage(
                key=f"tts:{turn.turn_id}:{chunk.index}", metric="tts_characters",
                amount=len(chunk.text), provider=spoke.name, stage=self._ctx.stage))

    async def _synthesize_with(self, turn: Turn, text: str, voice: VoiceSpec,
                               provider: TTSProvider) -> TTSProvider:
        """Speak ``text``; the provider that spoke it (the fallback when the voice's failed)."""
        frames_before = turn.frames
        try:
            await self._stream(turn, provider, text, voice)
            self._providers.succeeded(provider)
            return provider
        except ProviderError as exc:
            self._providers.failed(provider, exc)
            log.warning("tts provider failed: %s", exc,
                        extra=self._extra(turn.turn_id, provider=provider.name))
        fallback = self._providers.fallback()
        if turn.frames == frames_before and fallback is not provider:
            try:
                await self._stream(turn, fallback, text, voice)
                return fallback
            except ProviderError as exc:
                log.error("fallback tts provider failed too: %s", exc,
                          extra=self._extra(turn.turn_id, provider=fallback.name))
        metrics.SENTENCES_DROPPED.labels(reason="provider_failed").inc()
        return provider

    async def _stream(self, turn: Turn, provider: TTSProvider, text: str,
                      voice: VoiceSpec) -> None:
        async with contextlib.aclosing(encoded(provider, text, voice, turn.encoder)) as pieces:
            async for piece in pieces:
                await self._publish_frames(turn, piece)

    async def _publish_frames(self, turn: Turn, packets: Iterable[bytes]) -> None:
        """Publish ``packets`` (encoded as they are taken) in messages of up to
        ``TTS_FRAMES_PER_MESSAGE``, the turn's first frame in one of its own, at once.

        The rest of a reply is made far faster than it plays, and a publish does not give
        the event loop up: every reply of the process sounding at once would each encode
        and publish a message in every turn of the loop, and a new reply's first frame (and
        the reading of its sentence from the socket before it) would wait a turn of all of
        them at each step. So the frames after the first take turns through the process's
        ``pump``: one frame of one reply encoded (and its message published once it is
        full), then a turn of the loop for everything else. With batches a pump turn is
        then one encode, not a batch of them (docs/benchmarks.md 9f)."""
        packets = iter(packets)
        batch: list[bytes] = []
        while True:
            first = turn.frames == 0 and not batch
            async with contextlib.nullcontext() if first else self._pump:
                packet = next(packets, None)
                if packet is not None:
                    batch.append(packet)
                if batch and (packet is None or first
                              or len(batch) >= self._settings.frames_per_message):
                    await self._publish_message(turn, batch)
                    batch = []
                if packet is None:
                    return
                # the pump is held across a turn of the loop: neither an encode nor a
                # publish gives the loop up, so a pump let go at once would be free again for
                # every other reply in the same turn
                await asyncio.sleep(0)

    async def _publish_message(self, turn: Turn, packets: list[bytes]) -> None:
        """Publish one message of frames, never interrupted half-way (so ``frames`` counts
        exactly what went out); a cancel that came meanwhile stops the sentence right after
        it."""
        if turn.closed:
            raise asyncio.CancelledError
        turn.stale = self._not_current(turn)
        if turn.stale:  # this process was paused (SIGSTOP, swapped out) mid-sentence
            raise asyncio.CancelledError
        seq = turn.frames
        now = time.time_ns()
        body, count = F.pack(packets)
        headers = {
            H.TURN: turn.turn_id,
            H.SEQ: str(seq),
            H.PUBLISHED_NS: str(now),
            H.SPEECH_END_NS: str(turn.speech_end_ns),
            **count,
            **turn.trace,
        }
        msg_id = f"aout:{self._ctx.tenant}.{self._ctx.session}:{turn.turn_id}:{seq}"
        turn.publishing = True
        try:
            await self._ctx.publisher.publish(
                self._ctx.subjects.audio_out(turn.npc), body, msg_id, headers)
        finally:
            turn.publishing = False
        turn.frames = seq + len(packets)
        metrics.FRAMES.inc(len(packets))
        metrics.MESSAGES.inc()
        if seq == 0:
            turn.first_audio_ns = now
            tracing.event(turn.span, "first audio", now)
            turn.first_audio_s = time.monotonic() - turn.arrived
            metrics.FIRST_AUDIO_SECONDS.observe(turn.first_audio_s)
            if turn.speech_end_ns:  # 0: a GM's puppeted line, no player spoke
                metrics.SPEECH_TO_FIRST_AUDIO_SECONDS.observe(
                    max(0.0, (now - turn.speech_end_ns) / 1e9))
        if log.isEnabledFor(TRACE):
            log.log(TRACE, "frames published", extra=self._extra(turn.turn_id, seq=seq,
                                                                 frames=len(packets)))
        if turn.closed:
            raise asyncio.CancelledError

    # --- sentences synthesized ahead (BRAIN_SPECULATE) ------------------------------------

    async def _on_held(self, chunk: ReplyChunk, voice: VoiceSpec) -> None:
        """A guessed reply's sentence: synthesize it unpublished; an empty one discards it."""
        if not chunk.text.strip():
            held = self._held.get(chunk.turn_id)
            if held is not None:
                await self._end_held(held, "discarded")
            self._held_over.remember(chunk.turn_id)
            return
        if chunk.turn_id in self._held or chunk.turn_id in self._held_over:
            return  # redelivered, or replayed after a failover
        if len(chunk.text) > self._settings.max_chars:
            self._reject("oversized", f"held chunk of {len(chunk.text)} characters exceeds "
                         f"TTS_MAX_CHARS={self._settings.max_chars}", chunk.turn_id)
            return
        while len(self._held) >= MAX_HELD:
            await self._end_held(min(self._held.values(), key=lambda h: h.made), "expired")
        held = Held(chunk.turn_id, chunk.npc, chunk.text,
                    FrameEncoder(self._settings.opus_bitrate))
        held.task = asyncio.create_task(self._make_held(held, voice),
                                        name=f"tts-held-{chunk.turn_id}")
        self._held[held.turn_id] = held

    async def _make_held(self, held: Held, voice: VoiceSpec) -> None:
        provider = await self._providers.for_voice(voice, self._ctx.tenant)
        try:
            async with contextlib.aclosing(
                    encoded(provider, held.text, voice, held.encoder)) as pieces:
                async for piece in pieces:
                    held.pieces.extend([list(piece)])
            self._providers.succeeded(provider)
        except ProviderError as exc:
            held.failed = True
            self._providers.failed(provider, exc)
            log.warning("tts provider failed on a held sentence: %s", exc,
                        extra=self._extra(held.turn_id, provider=provider.name))
        except Exception:
            held.failed = True
            log.exception("held sentence failed", extra=self._extra(held.turn_id))
        finally:
            held.pieces.finish()
            await publish_usage(self._ctx.publisher, self._ctx.subjects, Usage(
                key=f"tts:{held.turn_id}:0", metric="tts_characters", amount=len(held.text),
                provider=provider.name, stage=self._ctx.stage))

    async def _claimed(self, chunk: ReplyChunk) -> Held | None:
        """The held audio ``chunk`` claims, taken out of the held set (None: synthesize)."""
        if chunk.claims is None:
            return None
        held = self._held.get(chunk.claims)
        self._held_over.remember(chunk.claims)
        if held is None:  # expired, or held by a replica that is gone
            return None
        if held.matches(chunk.npc, chunk.text):
            self._held.pop(held.turn_id)
            return held
        # another NPC or text, or the provider failed with nothing made: speak it afresh
        log.info("held sentence not usable for its claim",
                 extra=self._extra(chunk.turn_id, held=chunk.claims))
        await self._end_held(held, "discarded")
        return None

    async def _play_held(self, turn: Turn, held: Held) -> None:
        """Publish the held frames as the turn's, then those still being made: piece by
        piece of the provider's audio, so they go in the same messages as the same sentence
        synthesized afresh (a replica redoing the turn has no held audio; ADR 0010)."""
        turn.encoder = held.encoder
        async for piece in held.pieces.follow():
            await self._publish_frames(turn, piece)

    async def _end_held(self, held: Held, result: str) -> None:
        self._held.pop(held.turn_id, None)
        self._held_over.remember(held.turn_id)
        task, held.task = held.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                # its usage could not be published (this serving was given up): retrieved
                # here rather than reported as never retrieved
                log.debug("held sentence's task: %r", task.exception(),
                          extra=self._extra(held.turn_id))
        metrics.HELD.labels(result=result).inc()
        log.debug("held sentence %s", result, extra=self._extra(held.turn_id))

    # --- ending turns -------------------------------------------------------------------

    async def _close(self, turn: Turn, *, cancelled: bool, reason: str) -> None:
        """Stop the turn's audio (if still being made) and publish its ``AudioDone``."""
        if turn.closed:
            return
        turn.closed = True
        if self._speaking is not None and self._speaking[0] is turn:
            task = self._speaking[1]
            if not turn.publishing:  # else it stops by itself once the frame is out
                task.cancel()
            await asyncio.wait([task])
        done = AudioDone(turn_id=turn.turn_id, npc=turn.npc, frames=turn.frames,
                         first_audio_ns=turn.first_audio_ns, cancelled=cancelled,
                         reason=reason[:200])
        msg_id = f"ctl:{self._ctx.tenant}.{self._ctx.session}:audio.done:{turn.turn_id}"
        try:
            await self._ctx.publisher.publish_event(
                self._ctx.subjects.ctl(done.type), done, msg_id)
        finally:
            self._open.pop(turn.turn_id, None)
            self._finished.remember(turn.turn_id)
        metrics.TURNS.labels(outcome="cancelled" if cancelled else "spoken").inc()
        log.info("turn audio done", extra=self._extra(
            turn.turn_id, npc=turn.npc, frames=turn.frames, cancelled=cancelled, reason=reason,
            first_audio_ms=round(turn.first_audio_s * 1000) if turn.first_audio_s else None))

    async def on_tick(self) -> None:
        stale = time.monotonic() - self._settings.held_ttl_s
        for held in [h for h in self._held.values() if h.made < stale]:
            await self._end_held(held, "expired")
        idle = time.monotonic() - self._settings.turn_idle_timeout_s
        for turn in list(self._open.values()):
            speaking = self._speaking is not None and self._speaking[0] is turn
            if turn.last_chunk < idle and not speaking:
                await self._close(turn, cancelled=True, reason="no final chunk (idle timeout)")

    def tick_after_s(self) -> float | None:
        """Held sentences and open turns expire after seconds."""
        return 0.25 if self._held or self._open else None

    def retain_from(self) -> int | None:
        """The first reply chunk of the oldest turn whose ``AudioDone`` is not out yet."""
        return min((t.first_seq for t in self._open.values()), default=None)

    async def close(self) -> None:
        """Stop every synthesis, then say each open turn ended. When this serving of the
        session was given up (it is served again) nothing can be published: every turn's
        task is stopped all the same, and the first refusal is raised at the end."""
        for held in list(self._held.values()):
            await self._end_held(held, "discarded")
        refused: PublishError | None = None
        for turn in list(self._open.values()):
            try:
                await self._close(turn, cancelled=True, reason="session ended")
            except PublishError as exc:
                refused = refused or exc
        if refused is not None:
            raise refused

    # --- helpers ------------------------------------------------------------------------

    def _reject(self, reason: str, message: str, turn_id: str) -> None:
        self._ctx.reject(reason, f"reply chunk: {message}", logger=log, turn=turn_id)

    def _extra(self, turn_id: str, **more: object) -> dict[str, object]:
        return self._ctx.log_extra(turn=turn_id, **more)
