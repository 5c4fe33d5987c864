"""ElevenLabs over its HTTP streaming endpoint, through the ``elevenlabs`` SDK's async client.

One ``POST /v1/text-to-speech/{voice_id}/stream`` per sentence, asking for raw PCM
(``pcm_48000`` by default: nothing to decode, the samples go straight into opus; a lower
``pcm_*`` rate is resampled by the base class). Audio is yielded as soon as its first bytes
arrive. Closing the iterator (a barge-in) closes the HTTP response, which drops the
connection, so the generation stops upstream as well.

The SDK is imported here only; its exceptions are mapped to ``ProviderError``s: rate limits,
5xx, timeouts and broken connections are retryable, rejected requests (400, 401, 422) not.
No message carries the API key.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
from elevenlabs import AsyncElevenLabs, VoiceSettings
from elevenlabs.core.api_error import ApiError

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout, ProviderUnavailable
from glyphoxa_tts.providers.base import TTSCapabilities, TTSProvider

MIN_SPEED, MAX_SPEED = 0.7, 1.2
"""The speed range ElevenLabs accepts."""
CHUNK_BYTES = 3840
"""Bytes per chunk handed on: 40 ms at 48 kHz, two opus frames."""
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
MAX_DETAIL = 200


class ElevenLabsProvider(TTSProvider):
    name = "elevenlabs"

    def __init__(self, api_key: str, *, base_url: str, model: str, default_voice_id: str,
                 output_format: str = "pcm_48000", timeout_s: float = 30.0):
        if not api_key:
            raise ProviderUnavailable(self.name, "no API key (set TTS_ELEVENLABS_API_KEY)")
        if not output_format.startswith("pcm_"):
            raise ProviderUnavailable(self.name, f"output format {output_format!r} is not raw PCM")
        rate = int(output_format.removeprefix("pcm_"))
        super().__init__(TTSCapabilities(sample_rate=rate, streaming=True),
                         timeout_s=timeout_s, max_parallel=1)
        self._key, self._base_url, self._model = api_key, base_url, model
        self._default_voice, self._format = default_voice_id, output_format
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncElevenLabs | None = None

    def _sdk(self) -> AsyncElevenLabs:
        """The client, made on first use inside the event loop that will use it (one
        connection pool for every sentence: no new TLS handshake before each)."""
        if self._client is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_s)
            self._client = AsyncElevenLabs(api_key=self._key, base_url=self._base_url,
                                           timeout=self.timeout_s, httpx_client=self._http)
        return self._client

    async def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                               ) -> AsyncIterator[np.ndarray]:
        settings = voice_settings(voice, tempo)
        audio = self._sdk().text_to_speech.stream(
            voice.elevenlabs_voice_id or self._default_voice, text=text, model_id=self._model,
            output_format=self._format,  # type: ignore[arg-type]
            request_options={"max_retries": 0, "chunk_size": CHUNK_BYTES},
            **({"voice_settings": settings} if settings else {}))  # else the voice's own
        odd = b""
        try:
            async with contextlib.aclosing(audio):
                async for data in audio:
                    data, odd = _whole_samples(odd + data)
                    if data:
                        yield np.frombuffer(data, dtype="<i2").astype(np.int16)
        except ApiError as exc:
            raise self._rejected(exc) from None
        except httpx.TimeoutException:
            raise ProviderTimeout(self.name, self.timeout_s) from None
        except httpx.HTTPError as exc:
            raise ProviderError(self.name, f"connection failed ({type(exc).__name__})",
                                retryable=True) from None

    def _rejected(self, exc: ApiError) -> ProviderError:
        status = exc.status_code or 0
        retryable = status >= 500 or status in RETRYABLE_STATUS
        detail = _detail(exc.body).replace(self._key, "***")
        return ProviderError(self.name, f"HTTP {status}: {detail}", retryable=retryable)

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.aclose()
        self.close()


def voice_settings(voice: VoiceSpec, tempo: float = 1.0) -> VoiceSettings | None:
    """The NPC's ElevenLabs settings; ``tempo`` (the base class's pitch resampling asks for
    speech that much slower) scales the speed, within what ElevenLabs accepts."""
    speed = voice.speed
    if abs(tempo - 1.0) > 1e-6:
        speed = float(np.clip((voice.speed or 1.0) / tempo, MIN_SPEED, MAX_SPEED))
    given = {"stability": voice.stability, "similarity_boost": voice.similarity_boost,
             "style": voice.style, "speed": speed}
    given = {k: v for k, v in given.items() if v is not None}
    return VoiceSettings(**given) if given else None


def _whole_samples(data: bytes) -> tuple[bytes, bytes]:
    """The bytes that make whole int16 samples, and the odd byte left over."""
    cut = len(data) // 2 * 2
    return data[:cut], data[cut:]


def _detail(body: Any) -> str:
    """ElevenLabs' error text: ``{"detail": {"status", "message"}}``, or a 422's list."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        text = " ".join(str(detail[k]) for k in ("status", "message") if detail.get(k))
    elif isinstance(detail, list):
        text = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    else:
        text = str(detail or "")
    return text[:MAX_DETAIL] or "no details"
