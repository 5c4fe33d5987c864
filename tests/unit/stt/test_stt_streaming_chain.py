"""The stt core with a streaming primary and a chain of providers: partial transcripts
while the player speaks, the stream's final at the end, and the buffered audio through the
next provider whenever the stream or a provider fails (breakers skip one that is down)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from glyphoxa_runtime.providers import ProviderError
from glyphoxa_stt.chain import SttChain
from glyphoxa_stt.core import Limits, SttSession
from glyphoxa_stt.providers.base import (
    PartialHook,
    SttCapabilities,
    SttHints,
    SttProvider,
    SttResult,
    SttStream,
)
from glyphoxa_stt.providers.fake import FakeStt
from tests.unit.stt.stt_helpers import drive, session_started, tone

pytestmark = pytest.mark.unit

LINE = "Greta how much for the longsword"


class Stream(SttStream):
    def __init__(self, owner: Streaming, on_partial: PartialHook | None):
        self.owner, self.on_partial = owner, on_partial
        self.audio = bytearray()
        self.aborted = False

    async def send(self, pcm: bytes) -> None:
        if self.owner.break_after is not None and len(self.audio) >= self.owner.break_after:
            raise ProviderError("streaming", "connection dropped", retryable=True)
        self.audio += pcm
        words = LINE.split()[: len(self.audio) // 3200]  # a word per 100 ms heard
        if words and self.on_partial is not None:
            await self.on_partial(" ".join(words))

    async def finish(self) -> SttResult:
        if self.owner.finish_delay_s:
            await asyncio.sleep(self.owner.finish_delay_s)
        return SttResult(LINE + ".", len(self.audio) / 32000, "streaming")

    async def abort(self) -> None:
        self.aborted = True


class Streaming(SttProvider):
    """A streaming provider: a word of ``LINE`` per 100 ms of audio, the line at the end."""

    name = "streaming"
    capabilities = SttCapabilities(streaming=True)

    def __init__(self, *, open_error: ProviderError | None = None, break_after: int | None = None,
                 finish_delay_s: float = 0.0, batch_error: ProviderError | None = None):
        super().__init__(retries=0)
        self.open_error, self.break_after = open_error, break_after
        self.finish_delay_s, self.batch_error = finish_delay_s, batch_error
        self.streams: list[Stream] = []
        self.hints: list[SttHints] = []
        self.batch_calls = 0

    async def open_stream(self, hints: SttHints, on_partial: PartialHook | None = None,
                          on_endpoint=None) -> SttStream:  # type: ignore[no-untyped-def]
        self.hints.append(hints)
        if self.open_error is not None:
            raise self.open_error
        stream = Stream(self, on_partial)
        self.streams.append(stream)
        return stream

    async def _transcribe_impl(self, audio, *, prompt, language, keyterms=()) -> SttResult:  # type: ignore[no-untyped-def]
        self.batch_calls += 1
        if self.batch_error is not None:
            raise self.batch_error
        return SttResult("batch " + LINE, len(audio) / 16000, self.name)


def chain(*providers: SttProvider, failures: int = 3) -> SttChain:
    return SttChain(providers, failures=failures, cooldown_s=60)


async def test_partials_while_speaking_then_the_streams_final(ctx, feed, publisher) -> None:
    primary = Streaming()
    stt = SttSession(ctx, chain(primary, FakeStt(["whisper said"])))
    await stt.on_control(session_started())
    await drive(stt, feed.utterance("alex-1", tone(0.6)))

    *partials, final = publisher.transcripts()
    assert [p.text for p in partials] == [" ".join(LINE.split()[:n]) for n in range(1, 7)]
    assert not any(p.final for p in partials) and final.final
    assert final.text == LINE + "." and final.provider == "streaming"
    ids = [msg_id for _, _, msg_id in publisher.published]
    assert ids[0] == "stt:t1.s1:alex-1:partial-1" and ids[-1] == "stt:t1.s1:alex-1:final"
    assert primary.batch_calls == 0
    (hints,) = primary.hints
    assert "Captain Voss" in hints.keyterms and "Greta" in hints.keyterms
    np.testing.assert_array_equal(np.frombuffer(bytes(primary.streams[0].audio), np.int16), tone(0.6))


async def test_no_partials_when_they_are_off(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, chain(Streaming()), Limits(partials=False))
    await drive(stt, feed.utterance("alex-1", tone(0.6)))
    assert [t.final for t in publisher.transcripts()] == [True]


@pytest.mark.parametrize("primary", [
    Streaming(open_error=ProviderError("streaming", "503 at handshake", retryable=True)),
    Streaming(break_after=3200),
], ids=["cannot-open", "drops-mid-utterance"])
async def test_a_failed_stream_falls_back_to_the_buffer(ctx, feed, publisher, caplog, primary) -> None:
    stt = SttSession(ctx, chain(primary, FakeStt(["whisper said"])))
    with caplog.at_level(logging.WARNING, logger="glyphoxa.stt"):
        await drive(stt, feed.utterance("alex-1", tone(0.6)))
    final = publisher.transcripts()[-1]
    assert final.final and final.text == "batch " + LINE  # the primary's own batch mode
    assert "streaming recognition failed; transcribing the buffered audio" in caplog.text


async def test_a_stream_that_never_finalizes_is_given_up_in_time(ctx, feed, publisher) -> None:
    primary = Streaming(finish_delay_s=30)
    stt = SttSession(ctx, chain(primary), Limits(stream_finish_s=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await drive(stt, feed.utterance("alex-1", tone(0.3)))
    assert loop.time() - started < 2
    assert publisher.transcripts()[-1].text == "batch " + LINE
    assert primary.streams[0].aborted


async def test_reordered_audio_is_transcribed_from_the_buffer(ctx, feed, publisher) -> None:
    primary = Streaming()
    stt = SttSession(ctx, chain(primary))
    pcm = tone(0.3)
    a, b, c = (pcm[i:i + 1600].tobytes() for i in (0, 1600, 3200))
    await drive(stt, [feed.start("alex-1"), feed.audio("alex-1", 1, b), feed.audio("alex-1", 0, a),
                      feed.audio("alex-1", 2, c), feed.end("alex-1", 3)])
    assert publisher.transcripts()[-1].text == "batch " + LINE
    assert primary.batch_calls == 1


async def test_fallback_provider_answers_and_an_open_breaker_skips_the_primary(
        ctx, feed, publisher, caplog) -> None:
    down = ProviderError("streaming", "503", retryable=True)
    primary = Streaming(open_error=down, batch_error=down)
    whisper = FakeStt(["whisper said"])
    stt = SttSession(ctx, chain(primary, whisper, failures=2))
    with caplog.at_level(logging.INFO, logger="glyphoxa.stt"):
        for n in range(3):
            await drive(stt, feed.utterance(f"alex-{n}", tone(0.3)))
    assert [t.text for t in publisher.transcripts()] == ["whisper said"] * 3
    # utterance 0: stream + batch failed (2 failures: open); utterances 1 and 2 skip it
    assert len(primary.hints) == 1 and primary.batch_calls == 1
    assert "transcribed by a fallback provider" in caplog.text


async def test_every_provider_failing_gives_an_empty_final_with_the_error(ctx, feed, publisher) -> None:
    down = ProviderError("streaming", "503", retryable=True)
    stt = SttSession(ctx, chain(Streaming(open_error=down, batch_error=down)))
    await drive(stt, feed.utterance("alex-1", tone(0.3)))
    [final] = publisher.transcripts()
    assert final.text == "" and final.error == "speech recognition failed"


async def test_an_abandoned_utterance_closes_its_stream(ctx, feed, publisher) -> None:
    primary = Streaming()
    clock = [0.0]
    stt = SttSession(ctx, chain(primary), Limits(utterance_idle_s=5), clock=lambda: clock[0])
    await drive(stt, [feed.start("alex-1"), feed.audio("alex-1", 0, tone(0.1).tobytes())])
    await asyncio.sleep(0.05)
    clock[0] = 10
    await stt.on_tick()
    await asyncio.sleep(0.05)
    assert primary.streams[0].aborted
    assert not any(t.final for t in publisher.transcripts())


# --- finals at the provider's endpoint ----------------------------------------------------


class Endpointing(Streaming):
    """Hears the speaker stop after ``pause_at`` bytes; says ``more`` if audio goes on."""

    def __init__(self, pause_at: int, more: str = ""):
        super().__init__()
        self.pause_at, self.more = pause_at, more

    async def open_stream(self, hints, on_partial=None, on_endpoint=None):  # type: ignore[no-untyped-def]
        stream = await super().open_stream(hints, on_partial)
        owner = self

        class EndpointStream(type(stream)):  # type: ignore[misc]
            async def send(self, pcm: bytes) -> None:
                before = len(self.audio)
                self.audio += pcm
                if before < owner.pause_at <= len(self.audio) and on_endpoint is not None:
                    await on_endpoint("Greta, how much?")

            async def finish(self) -> SttResult:
                said = "Greta, how much?" + (f" {owner.more}" if owner.more else "")
                return SttResult(said, len(self.audio) / 32000, "streaming")

        stream.__class__ = EndpointStream
        return stream


async def test_the_final_goes_out_when_the_provider_hears_the_speaker_stop(ctx, feed, publisher) -> None:
    pcm = tone(0.6)
    stt = SttSession(ctx, chain(Endpointing(pause_at=pcm.nbytes)),
                     Limits(partials=False, early_finals=True))
    *speech, end = feed.utterance("alex-1", pcm)
    await drive(stt, speech)
    await asyncio.sleep(0.05)  # the stream hears the audio as it comes
    [early] = publisher.transcripts()  # before vad's end
    assert early.final and early.text == "Greta, how much?" and early.vad_end_ns == 0
    assert 0 < early.speech_end_ns <= early.stt_final_ns
    assert [msg_id for _, _, msg_id in publisher.published] == ["stt:t1.s1:alex-1:final"]
    await drive(stt, [end])
    assert len(publisher.transcripts()) == 1  # nothing more was said
    [(_, usage, _)] = publisher.usage
    assert usage.key == "stt:alex-1" and usage.amount == pytest.approx(0.6)


async def test_words_after_the_endpoint_are_a_continuation_line(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, chain(Endpointing(pause_at=3200, more="For the longsword.")),
                     Limits(partials=False, early_finals=True))
    *speech, end = feed.utterance("alex-1", tone(0.6))
    await drive(stt, speech)
    await asyncio.sleep(0.05)
    await drive(stt, [end])
    early, rest = publisher.transcripts()
    assert (early.utterance_id, early.text) == ("alex-1", "Greta, how much?")
    assert (rest.utterance_id, rest.text, rest.final) == ("alex-1.2", "For the longsword.", True)
    assert len(publisher.usage) == 1


async def test_early_finals_are_off_by_default(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, chain(Endpointing(pause_at=3200, more="For the longsword.")),
                     Limits(partials=False))
    *speech, end = feed.utterance("alex-1", tone(0.6))
    await drive(stt, speech)
    await asyncio.sleep(0.05)
    await drive(stt, [end])
    [final] = publisher.transcripts()
    assert final.text == "Greta, how much? For the longsword." and final.vad_end_ns > 0


@pytest.mark.parametrize("early, full, rest", [
    ("Greta, how much?", "Greta, how much? For the sword.", "For the sword."),
    ("Greta, how much?", "greta how much", ""),
    ("Greta, how much?", "Something else entirely, longer.", ""),
    ("Greta.", "Greta.", ""),
])
def test_remainder(early, full, rest) -> None:  # type: ignore[no-untyped-def]
    from glyphoxa_stt.core import remainder

    assert remainder(early, full) == rest


async def test_an_endpoint_after_vads_end_is_too_late_to_matter(ctx, feed, publisher) -> None:
    """vad ended the utterance first: the final comes from the stream's finish alone."""
    stt = SttSession(ctx, chain(Endpointing(pause_at=10**9)),
                     Limits(partials=False, early_finals=True))
    await drive(stt, feed.utterance("alex-1", tone(0.3)))
    [final] = publisher.transcripts()
    assert final.text == "Greta, how much?" and final.vad_end_ns > 0


class Keyed(Streaming):
    name = "deepgram"

    def __init__(self, key: str = ""):
        super().__init__()
        self.key = key

    @property
    def usable(self) -> bool:
        return bool(self.key)


class StoredKeys:
    async def get(self, tenant: str, name: str) -> str | None:
        return "tenant-own-key" if tenant == "brings-a-key" else None


async def test_a_keyless_cloud_provider_is_skipped_for_tenants_without_a_key() -> None:
    whisper = FakeStt(["whisper said"])
    stt_chain = SttChain([Keyed(), whisper], keys=StoredKeys(),  # type: ignore[arg-type]
                         keyed=lambda name, key: Keyed(key))
    assert await stt_chain.for_tenant("no-key") == [whisper]
    own, rest = await stt_chain.for_tenant("brings-a-key")
    assert isinstance(own, Keyed) and own.key == "tenant-own-key" and rest is whisper
    assert own is (await stt_chain.for_tenant("brings-a-key"))[0]  # made once
    lonely = SttChain([Keyed()], keys=StoredKeys(), keyed=lambda n, k: Keyed(k))  # type: ignore[arg-type]
    assert len(await lonely.for_tenant("no-key")) == 1  # nothing else: it refuses, clearly
