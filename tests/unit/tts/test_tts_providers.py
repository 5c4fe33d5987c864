"""The tts providers really speak: audible, plausible length, pitch that really moves."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_tts.config import Settings
from glyphoxa_tts.providers import ProviderSet, build_provider
from glyphoxa_tts.providers.base import TTSProvider
from tests.unit.tts.tts_helpers import ScriptedProvider, dominant_f0, rms

pytestmark = pytest.mark.unit

TEXT = "Welcome to the Prancing Pony, traveller. What can I get you tonight?"
RATE = 48_000


@pytest.fixture(params=["piper", "espeak", "fake"])
def provider(request: pytest.FixtureRequest):
    p = build_provider(request.param, Settings(provider=request.param))
    yield p
    p.close()


async def speak(p: TTSProvider, text: str = TEXT, **voice: object) -> np.ndarray:
    chunks = [c async for c in p.synthesize(text, VoiceSpec(**voice))]
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    return np.concatenate(chunks)


async def test_provider_speaks_audibly_for_a_plausible_time(provider: TTSProvider):
    audio = await speak(provider)
    seconds = len(audio) / RATE
    # 12 words: a person needs about 3-5 s; anything in 2-7 s is speech-like
    assert 2.0 < seconds < 7.0, seconds
    assert rms(audio) > 500  # clearly audible, not silence
    assert np.abs(audio).max() < 32768


async def test_longer_text_gives_longer_audio(provider: TTSProvider):
    short = await speak(provider, "Hello there.")
    long = await speak(provider, TEXT + " " + TEXT)
    assert len(long) > 3 * len(short)


@pytest.mark.parametrize("name", ["piper", "espeak", "fake"])
async def test_pitch_moves_pitch_but_keeps_duration(name: str):
    p = build_provider(name, Settings(provider=name))
    try:
        base = await speak(p, pitch=1.0)
        high = await speak(p, pitch=1.4)
        low = await speak(p, pitch=0.75)
    finally:
        p.close()
    f_base, f_high, f_low = dominant_f0(base), dominant_f0(high), dominant_f0(low)
    assert f_high / f_base == pytest.approx(1.4, rel=0.15), (f_base, f_high)
    assert f_low / f_base == pytest.approx(0.75, rel=0.15), (f_base, f_low)
    # piper's shortest sounds do not stretch with length_scale, so high voices come out a
    # little faster (about 8 % at 1.4); the duration stays "about the same"
    assert len(high) / len(base) == pytest.approx(1.0, abs=0.2)
    assert len(low) / len(base) == pytest.approx(1.0, abs=0.2)


async def test_piper_length_scale_slows_speech():
    p = build_provider("piper", Settings(provider="piper"))
    try:
        normal, slow = await speak(p), await speak(p, length_scale=1.6)
    finally:
        p.close()
    assert len(slow) / len(normal) > 1.3


async def test_espeak_rate_and_voice():
    p = build_provider("espeak", Settings(provider="espeak"))
    try:
        normal, fast = await speak(p), await speak(p, rate=330)
        british = await speak(p, espeak_voice="en-gb")  # a language, not a voice file name
        female = await speak(p, espeak_voice="en-gb+f3")  # language plus variant
        unknown = await speak(p, espeak_voice="no-such-voice")  # falls back to en-us
    finally:
        p.close()
    assert len(fast) / len(normal) < 0.7
    assert rms(british) > 500 and rms(unknown) > 500
    assert dominant_f0(female) > 1.5 * dominant_f0(british)


async def test_espeak_is_serialized_across_concurrent_calls():
    p = build_provider("espeak", Settings(provider="espeak"))
    try:
        alone = len(await speak(p, "Short one.")), len(await speak(p, TEXT))
        together = await asyncio.gather(speak(p, "Short one."), speak(p, TEXT))
    finally:
        p.close()
    # espeak-ng varies by a few samples run to run; interleaved calls would mix whole chunks
    assert len(together[0]) == pytest.approx(alone[0], rel=0.01)
    assert len(together[1]) == pytest.approx(alone[1], rel=0.01)


async def test_piper_synthesis_leaves_the_event_loop_responsive():
    p = build_provider("piper", Settings(provider="piper"))
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        await speak(p, TEXT + " " + TEXT)
    finally:
        stop.set()
        await task
        p.close()
    assert max(gaps) < 0.1, max(gaps)


def test_piper_threads_sleep_when_idle_unless_told_to_spin():
    """onnxruntime's threads spin by default: on a busy machine that takes a core from the
    stage or program that needs it (issue 13, item 12)."""
    for settings, spinning in ((Settings(provider="piper"), "0"),
                               (Settings(provider="piper", piper_threads=1, piper_spin=True), "1")):
        p = build_provider("piper", settings)
        options = p._voice.session.get_session_options()  # type: ignore[attr-defined]
        assert options.intra_op_num_threads == settings.piper_threads
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning


async def test_piper_that_cannot_load_falls_back_to_espeak(tmp_path, caplog):
    settings = Settings(provider="piper", piper_model_path=str(tmp_path / "missing.onnx"))
    with caplog.at_level(logging.WARNING):
        providers = ProviderSet(settings)
    try:
        assert providers.default.name == "espeak"
        assert "falling back to espeak" in caplog.text
        assert (await providers.for_voice(VoiceSpec(provider="piper"))).name == "espeak"
    finally:
        providers.close()


async def test_voice_provider_overrides_the_default():
    providers = ProviderSet(Settings(provider="fake"))
    try:
        assert (await providers.for_voice(VoiceSpec())).name == "fake"
        assert (await providers.for_voice(VoiceSpec(provider="espeak"))).name == "espeak"
        assert (await providers.for_voice(VoiceSpec(provider="nonsense"))).name == "fake"
    finally:
        providers.close()


async def test_a_voice_choosing_the_fake_double_gets_the_real_default_outside_test_stacks():
    providers = ProviderSet(Settings(provider="espeak"))
    try:
        assert (await providers.for_voice(VoiceSpec(provider="fake"))).name == "espeak"
    finally:
        providers.close()


async def test_vendor_errors_and_timeouts_become_provider_errors():
    broken = ScriptedProvider(fail=RuntimeError("vendor exploded"))
    with pytest.raises(ProviderError) as info:
        await speak(broken)
    assert not isinstance(info.value, RuntimeError) and "vendor exploded" in str(info.value)
    assert info.value.provider == "scripted" and not info.value.retryable
    hung = ScriptedProvider(hang=True, timeout_s=0.2)
    with pytest.raises(ProviderTimeout) as timeout:
        await speak(hung)
    assert timeout.value.retryable
