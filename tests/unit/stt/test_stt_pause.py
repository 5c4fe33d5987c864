"""Transcribing at vad's pause (``STT_TRANSCRIBE_ON_PAUSE``): the result is the final when
the utterance ends on exactly the audio transcribed, and never otherwise."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from glyphoxa_events.models import MalformedEvent
from glyphoxa_runtime.providers import ProviderError
from glyphoxa_stt.core import Limits, SttSession
from glyphoxa_stt.inbound import Pause, parse_vad_message
from glyphoxa_stt.providers.fake import FakeStt
from tests.unit.stt.stt_helpers import tone

pytestmark = pytest.mark.unit


class SlowStt(FakeStt):
    """The fake recognizer taking ``delay_s`` per call, keeping the audio of every call."""

    def __init__(self, texts: list[str], delay_s: float = 0.05):
        super().__init__(texts)
        self.delay_s = delay_s
        self.audio: list[np.ndarray] = []

    async def _transcribe_impl(self, audio, *, prompt, language, keyterms=()):  # type: ignore[no-untyped-def]
        self.audio.append(audio.copy())
        await asyncio.sleep(self.delay_s)
        return await super()._transcribe_impl(audio, prompt=prompt, language=language,
                                              keyterms=keyterms)


def _chunks(pcm: np.ndarray, size: int = 2560) -> list[bytes]:
    return [pcm[i:i + size].tobytes() for i in range(0, len(pcm), size)]


async def test_the_pause_transcript_is_the_final_when_nothing_came_after(ctx, feed, publisher) -> None:
    provider = SlowStt(["Greta, how much for the longsword?", "never asked"])
    stt = SttSession(ctx, provider)
    *whole, tail = _chunks(tone(1.0))  # 6 whole chunks and a tail of 160 samples
    await stt.on_message(feed.start("alex-1"))
    for i, chunk in enumerate(whole):
        await stt.on_message(feed.audio("alex-1", i, chunk))
    await stt.on_message(feed.pause("alex-1", len(whole), tail))
    await asyncio.sleep(0.1)  # the rest of vad's silence: the recognizer finishes meanwhile
    await stt.on_message(feed.audio("alex-1", len(whole), tail))  # the end sends the tail
    started = asyncio.get_running_loop().time()
    await stt.on_message(feed.end("alex-1", len(whole) + 1))
    assert asyncio.get_running_loop().time() - started < provider.delay_s  # not transcribed again
    assert len(provider.audio) == 1
    np.testing.assert_array_equal(provider.audio[0], tone(1.0))
    [t] = publisher.transcripts()
    assert t.text == "Greta, how much for the longsword?" and t.final


async def test_speech_after_the_pause_is_transcribed_again_whole(ctx, feed, publisher) -> None:
    provider = SlowStt(["Greta,", "Greta, how much for the longsword?"], delay_s=0.0)
    stt = SttSession(ctx, provider)
    pcm = tone(1.5)
    chunks = _chunks(pcm)
    await stt.on_message(feed.start("alex-1"))
    for i in range(3):
        await stt.on_message(feed.audio("alex-1", i, chunks[i]))
    await stt.on_message(feed.pause("alex-1", 3, b""))
    await asyncio.sleep(0.01)  # transcribed at the pause: "Greta,"
    for i in range(3, len(chunks)):  # the player goes on
        await stt.on_message(feed.audio("alex-1", i, chunks[i]))
    await stt.on_message(feed.end("alex-1", len(chunks)))
    [t] = publisher.transcripts()
    assert t.text == "Greta, how much for the longsword?"
    np.testing.assert_array_equal(provider.audio[-1], pcm)


async def test_a_different_last_chunk_is_not_the_paused_audio(ctx, feed, publisher) -> None:
    """Speech resumed right after the pause and filled the chunk the tail began."""
    provider = SlowStt(["Greta,", "Greta, how much?"], delay_s=0.0)
    stt = SttSession(ctx, provider)
    chunks = _chunks(tone(0.5))
    await stt.on_message(feed.start("alex-1"))
    await stt.on_message(feed.audio("alex-1", 0, chunks[0]))
    await stt.on_message(feed.pause("alex-1", 1, chunks[1][:320]))
    await asyncio.sleep(0.01)  # transcribed at the pause: "Greta,"
    await stt.on_message(feed.audio("alex-1", 1, chunks[1]))
    await stt.on_message(feed.end("alex-1", 2))
    assert [t.text for t in publisher.transcripts()] == ["Greta, how much?"]
    assert len(provider.audio) == 2


async def test_without_all_chunks_or_when_switched_off_nothing_starts(ctx, feed, publisher) -> None:
    provider = SlowStt(["one", "two"], delay_s=0.0)
    stt = SttSession(ctx, provider, Limits(transcribe_on_pause=False))
    chunks = _chunks(tone(0.5))
    await stt.on_message(feed.start("alex-1"))
    await stt.on_message(feed.audio("alex-1", 0, chunks[0]))
    await stt.on_message(feed.pause("alex-1", 1))
    await asyncio.sleep(0)
    assert provider.audio == []
    on = SttSession(ctx, provider)
    await on.on_message(feed.start("alex-2"))
    await on.on_message(feed.pause("alex-2", 1))  # chunk 0 never came
    await on.on_message(feed.pause("alex-9", 0))  # an utterance it does not know: a hint, ignored
    await asyncio.sleep(0)
    assert provider.audio == []


async def test_a_failed_pause_transcription_is_done_again_at_the_end(ctx, feed, publisher) -> None:
    class FailingOnce(SlowStt):
        calls = 0

        async def _transcribe_impl(self, audio, *, prompt, language, keyterms=()):  # type: ignore[no-untyped-def]
            FailingOnce.calls += 1
            if FailingOnce.calls == 1:
                raise ProviderError("fake", "down for a moment")
            return await super()._transcribe_impl(audio, prompt=prompt, language=language,
                                                  keyterms=keyterms)

    provider = FailingOnce(["Greta?"], delay_s=0.0)
    stt = SttSession(ctx, provider)
    chunks = _chunks(tone(0.32))
    await stt.on_message(feed.start("alex-1"))
    await stt.on_message(feed.audio("alex-1", 0, chunks[0]))
    await stt.on_message(feed.audio("alex-1", 1, chunks[1]))
    await stt.on_message(feed.pause("alex-1", 2))
    await asyncio.sleep(0.01)
    await stt.on_message(feed.end("alex-1", 2))
    assert [t.text for t in publisher.transcripts()] == ["Greta?"]
    assert FailingOnce.calls == 2


def test_pause_messages_are_checked_at_the_boundary(feed, subjects) -> None:
    item = parse_vad_message(feed.pause("alex-1", 3, b"\x01\x00" * 10), subjects)
    assert item == Pause("alex-1", "alex", 3, b"\x01\x00" * 10)
    assert parse_vad_message(feed.pause("alex-1", 0), subjects).tail == b""
    bad = feed.pause("alex-1", 3, b"\x01")
    with pytest.raises(MalformedEvent, match="not PCM16"):
        parse_vad_message(bad, subjects)
    bad = feed.pause("alex-1", 3)
    bad.headers["Glx-Seq"] = "x"
    with pytest.raises(MalformedEvent, match="invalid"):
        parse_vad_message(bad, subjects)
