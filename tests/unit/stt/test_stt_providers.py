"""The provider base class (timeout, retries, errors, metrics) and provider selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client import REGISTRY

from glyphoxa_runtime.providers import ProviderError, ProviderTimeout, ProviderUnavailable
from glyphoxa_stt.config import Settings
from glyphoxa_stt.providers import build_provider
from glyphoxa_stt.providers.base import SttCapabilities, SttProvider, SttResult
from glyphoxa_stt.providers.fake import FakeStt

pytestmark = pytest.mark.unit

SECOND = np.zeros(16_000, dtype=np.int16)


class Exploding(SttProvider):
    name = "exploding"
    capabilities = SttCapabilities(languages=("en",))

    async def _transcribe_impl(self, audio, *, prompt, language, keyterms=()) -> SttResult:  # type: ignore[no-untyped-def]
        raise KeyError("vendor internals")


async def test_slow_provider_times_out_as_retryable() -> None:
    provider = FakeStt(delay_s=5.0, timeout_s=0.05, retries=0)
    with pytest.raises(ProviderTimeout) as info:
        await provider.transcribe(SECOND)
    assert info.value.retryable


async def test_an_instant_transcription_takes_no_turn_of_the_event_loop() -> None:
    """The timeout is a scope, not a task: a provider that answers at once (the fake, a
    cached result) finishes in the caller's step, ahead of every other session's work."""
    transcribing = FakeStt(text="Greta, the longsword?").transcribe(SECOND)
    with pytest.raises(StopIteration) as done:
        transcribing.send(None)
    assert done.value.value.text == "Greta, the longsword?"


async def test_vendor_exceptions_do_not_leak() -> None:
    with pytest.raises(ProviderError) as info:
        await Exploding(retries=3).transcribe(SECOND)
    assert not info.value.retryable and "KeyError" in str(info.value)


async def test_input_and_language_are_checked() -> None:
    with pytest.raises(ValueError):
        await FakeStt().transcribe(SECOND.astype(np.float32))
    with pytest.raises(ProviderError):
        await Exploding().transcribe(SECOND, language="de")


async def test_metrics_count_transcribed_audio() -> None:
    def audio_seconds() -> float:
        return REGISTRY.get_sample_value("glyphoxa_stt_audio_seconds_total", {"provider": "fake"}) or 0.0

    before = audio_seconds()
    await FakeStt().transcribe(np.zeros(8_000, dtype=np.int16))
    assert audio_seconds() == pytest.approx(before + 0.5)
    assert REGISTRY.get_sample_value("glyphoxa_stt_transcribe_seconds_count", {"provider": "fake"})


async def test_fake_script_is_consumed_in_order_per_session(tmp_path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["one", "two"]))
    provider = build_provider(Settings(provider="fake", fake_script=script))
    first, second = provider.for_session(), provider.for_session()
    texts = [(await first.transcribe(SECOND)).text for _ in range(3)]
    assert texts == ["one", "two", "one"]
    assert (await second.transcribe(SECOND)).text == "one"


async def test_fake_script_spread_gives_each_session_lines_of_its_own(tmp_path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([f"line {n}" for n in range(6)]))
    provider = build_provider(Settings(provider="fake", fake_script=script, fake_script_spread=2))
    sessions = [provider.for_session() for _ in range(4)]
    heard = [[(await s.transcribe(SECOND)).text for _ in range(2)] for s in sessions]
    assert heard == [["line 0", "line 1"], ["line 2", "line 3"], ["line 4", "line 5"],
                     ["line 0", "line 1"]]  # cycling when the script runs out


async def test_fake_without_script_says_hello() -> None:
    result = await build_provider(Settings(provider="fake")).transcribe(SECOND)
    assert (result.text, result.provider, result.audio_seconds) == ("hello there", "fake", 1.0)


def test_bad_fake_script_is_refused(tmp_path) -> None:
    script = tmp_path / "script.json"
    script.write_text('{"not": "a list"}')
    with pytest.raises(ProviderUnavailable):
        build_provider(Settings(provider="fake", fake_script=script))


def test_settings_come_from_stt_env(monkeypatch) -> None:
    monkeypatch.setenv("STT_PROVIDER", "fake")
    monkeypatch.setenv("STT_WHISPER_CPU_THREADS", "3")
    monkeypatch.setenv("STT_WHISPER_TEMPERATURES", "[0.0]")
    monkeypatch.setenv("NATS_CLAIM_LEASE_S", "2")
    settings = Settings()
    assert settings.provider == "fake" and settings.whisper_cpu_threads == 3
    assert settings.whisper_temperatures == (0.0,)
    assert settings.nats.claim_lease_s == 2.0


async def test_whisper_without_a_model_is_unavailable(tmp_path) -> None:
    provider = build_provider(Settings(whisper_model_path=tmp_path))
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.start()
    finally:
        await provider.close()
