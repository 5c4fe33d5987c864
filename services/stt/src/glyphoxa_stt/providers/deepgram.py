"""Deepgram speech-to-text through the ``deepgram-sdk`` (v7) async client.

Two ways in, both with the campaign's NPC names as ``keyterm`` prompts (Nova-3 only):

* prerecorded (``transcribe``): one ``POST /v1/listen`` per utterance. The audio goes as a
  WAV file (a 44-byte header on the PCM16 samples): Deepgram reads the encoding and rate
  from the container, whereas headerless PCM needs ``encoding`` and ``sample_rate``
  parameters that the SDK's prerecorded call does not expose.
* streaming (``open_stream``): the live websocket ``/v1/listen`` with ``linear16`` at
  16 kHz mono and interim results. Each interim hypothesis goes to the partial hook as the
  finalized segments so far plus the interim; ``finish`` sends ``Finalize`` and
  ``CloseStream`` together and waits for the ``from_finalize`` result or the server's
  clean close, whichever comes first. (Deepgram may not answer ``Finalize`` at all when
  it has no audio left to flush, e.g. after an endpoint; ``CloseStream`` always ends in
  the final results and a close.)

The SDK's own HTTP retries are off (the base class retries once). Its exceptions are
mapped here and never leave this module: rate limits, 5xx, timeouts and broken
connections are retryable, a refused key or a bad request not. No message or log line
carries the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import wave
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.listen.v1 import ListenV1Error, ListenV1Results
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException

from glyphoxa_runtime.logs import TRACE
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout, ProviderUnavailable
from glyphoxa_stt.providers.base import (
    SAMPLE_RATE,
    EndpointHook,
    PartialHook,
    SttCapabilities,
    SttHints,
    SttProvider,
    SttResult,
    SttStream,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.deepgram.com"
DEFAULT_WS_URL = "wss://api.deepgram.com"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
MAX_DETAIL = 200
CLOSE_TIMEOUT_S = 1.0
"""The websocket's closing handshake; websockets' own default (10 s, up to 5 times over)
would hold a failed stream's fallback for that long when the server no longer answers."""


@dataclass(frozen=True)
class DeepgramConfig:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    """REST root (prerecorded transcription)."""
    ws_url: str = DEFAULT_WS_URL
    """Websocket root (streaming)."""
    model: str = "nova-3"
    endpointing_ms: int = 300
    """Silence after which Deepgram finalizes a segment of a stream; 0 turns it off."""
    finalize_timeout_s: float = 2.0
    """Longest wait for a stream's last words once the utterance has ended."""
    keepalive_s: float = 5.0
    """A stream with no audio for this long gets a ``KeepAlive`` (Deepgram closes an idle
    stream after about 10 s)."""
    smart_format: bool = True
    vad_events: bool = False


class DeepgramStt(SttProvider):
    name = "deepgram"
    capabilities = SttCapabilities(streaming=True, prompt=False, languages=())

    def __init__(self, config: DeepgramConfig, *, keyless_ok: bool = False, **base: float):
        """``keyless_ok``: built without a key, for tenants that store their own (then this
        instance refuses every call, and the stage moves on to its next provider)."""
        if not config.api_key and not keyless_ok:
            raise ProviderUnavailable(self.name, "no API key (set STT_DEEPGRAM_API_KEY)")
        super().__init__(**base)  # type: ignore[arg-type]
        self.config = config
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncDeepgramClient | None = None

    @property
    def usable(self) -> bool:
        return bool(self.config.api_key)

    def _sdk(self) -> AsyncDeepgramClient:
        """The client, made on first use inside the event loop that uses it (one connection
        pool for every prerecorded request)."""
        if not self.config.api_key:
            raise ProviderUnavailable(self.name, "no API key: set STT_DEEPGRAM_API_KEY or store "
                                                 "a 'deepgram' secret for the tenant")
        if self._client is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s)
            self._client = AsyncDeepgramClient(
                api_key=self.config.api_key, max_retries=0, timeout=self._timeout_s,
                httpx_client=self._http, environment=DeepgramClientEnvironment(
                    base=self.config.base_url.rstrip("/"),
                    production=self.config.ws_url.rstrip("/"),
                    agent=self.config.ws_url.rstrip("/"),
                    agent_rest=self.config.base_url.rstrip("/")))
        return self._client

    async def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.aclose()

    def _keyterms(self, keyterms: tuple[str, ...]) -> list[str] | None:
        """Keyterm prompting exists for Nova-3 only; other models refuse the parameter."""
        return list(keyterms) if keyterms and self.config.model.startswith("nova-3") else None

    # --- prerecorded ----------------------------------------------------------------------

    async def _transcribe_impl(
        self, audio: np.ndarray, *, prompt: str | None, language: str, keyterms: tuple[str, ...]
    ) -> SttResult:
        seconds = len(audio) / SAMPLE_RATE
        if not len(audio):
            return SttResult("", 0.0, self.name)
        try:
            response = await self._sdk().listen.v1.media.transcribe_file(
                request=wav_bytes(audio), model=self.config.model, language=language,
                punctuate=True, smart_format=self.config.smart_format,
                keyterm=self._keyterms(keyterms))
        except Exception as exc:  # noqa: BLE001 - vendor errors stay in this module
            raise self._error(exc) from None
        text = _prerecorded_transcript(response)
        return SttResult(text, seconds, self.name, suppressed="" if text else "no_speech")

    # --- streaming ------------------------------------------------------------------------

    async def open_stream(self, hints: SttHints, on_partial: PartialHook | None = None,
                          on_endpoint: EndpointHook | None = None) -> SttStream:
        self._check_language(hints.language)
        started = time.perf_counter()
        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self._timeout_s):
                socket = await stack.enter_async_context(
                    self._sdk().listen.v1.connect(**self._live_options(hints)))
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception):
                raise self._error(exc) from None
            raise
        protocol = getattr(socket, "_websocket", None)  # the SDK keeps websockets' connection
        if protocol is not None and hasattr(protocol, "close_timeout"):
            protocol.close_timeout = CLOSE_TIMEOUT_S
        log.debug("deepgram stream open", extra={
            "provider": self.name, "seconds": round(time.perf_counter() - started, 3)})
        return DeepgramStream(self, socket, stack, on_partial, on_endpoint)

    def _live_options(self, hints: SttHints) -> dict[str, Any]:
        cfg = self.config
        options: dict[str, Any] = {
            "model": cfg.model, "language": hints.language, "encoding": "linear16",
            "sample_rate": SAMPLE_RATE, "channels": 1, "interim_results": "true",
            "endpointing": cfg.endpointing_ms if cfg.endpointing_ms > 0 else "false",
            "punctuate": "true", "smart_format": _flag(cfg.smart_format),
            "keyterm": self._keyterms(hints.keyterms)}
        if cfg.vad_events:
            options["vad_events"] = "true"
        return options

    # --- errors ---------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> ProviderError:
        """Our error for whatever the SDK or its transports raised; never the key."""
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, ApiError):  # str(ApiError) carries the request headers: not used
            return self._refused(exc.status_code or 0, exc.body)
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return ProviderTimeout(self.name, self._timeout_s)
        if isinstance(exc, httpx.HTTPError | OSError | WebSocketException):
            return ProviderError(self.name, f"connection failed ({type(exc).__name__})",
                                 retryable=True)
        detail = self.scrub(str(exc)) or "no detail"
        return ProviderError(self.name, f"{type(exc).__name__}: {detail}")

    def _refused(self, status: int, body: Any) -> ProviderError:
        detail = self.scrub(_detail(body))
        if status in (401, 403):
            message = f"HTTP {status}: the API key was refused ({detail})"
        else:
            message = f"HTTP {status}: {detail}"
        retryable = status >= 500 or status in RETRYABLE_STATUS
        return ProviderError(self.name, message, retryable=retryable)

    def scrub(self, text: str) -> str:
        if self.config.api_key:
            text = text.replace(self.config.api_key, "***")
        return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."


class DeepgramStream(SttStream):
    """One utterance on one live websocket. A reader task of its own takes Deepgram's
    messages as they come; a keep-alive task covers long pauses inside the utterance.
    Both end with the stream (``finish`` or ``abort``), whatever happens."""

    def __init__(self, provider: DeepgramStt, socket: AsyncV1SocketClient,
                 stack: contextlib.AsyncExitStack, on_partial: PartialHook | None,
                 on_endpoint: EndpointHook | None = None):
        self._provider, self._socket, self._stack = provider, socket, stack
        self._on_partial, self._on_endpoint = on_partial, on_endpoint
        self._finals: list[str] = []
        self._shown = ""
        self._failure: ProviderError | None = None
        self._done = asyncio.Event()
        """Set by the ``from_finalize`` result, the end of the socket, or a failure."""
        self._finalized = self._closing = self._closed = False
        self._sent_bytes = 0
        self._opened = self._last_sent = time.monotonic()
        self._reader = asyncio.create_task(self._read(), name="deepgram-stream-read")
        self._keeper = asyncio.create_task(self._keep_alive(), name="deepgram-stream-keepalive")

    @property
    def text(self) -> str:
        """The finalized segments so far."""
        return " ".join(self._finals)

    async def send(self, pcm: bytes) -> None:
        await self._check_usable()
        try:
            await self._socket.send_media(pcm)
        except (ConnectionClosed, OSError) as exc:
            error = self._failure or self._lost(exc)
            await self._close("failed")
            raise error from None
        self._sent_bytes += len(pcm)
        self._last_sent = time.monotonic()

    async def finish(self) -> SttResult:
        await self._check_usable()
        outcome = "failed"
        try:
            try:
                await self._socket.send_finalize()
                self._closing = True
                await self._socket.send_close_stream()
            except (ConnectionClosed, OSError) as exc:
                raise self._failure or self._lost(exc) from None
            timeout_s = self._provider.config.finalize_timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    await self._done.wait()
            except TimeoutError:
                outcome = "timeout"
                raise ProviderTimeout(self._provider.name, timeout_s) from None
            if self._failure is not None:
                raise self._failure
            outcome = "finished"
        finally:
            await self._close(outcome)
        text = self.text
        return SttResult(text, self._sent_bytes / 2 / SAMPLE_RATE, self._provider.name,
                         suppressed="" if text else "no_speech")

    async def abort(self) -> None:
        await self._close("aborted")

    # --- the reader -----------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                await self._on_message(await self._socket.recv())
        except ConnectionClosedOK:
            if not (self._closing or self._finalized):
                self._fail(ProviderError(self._provider.name, "Deepgram closed the stream "
                                         "mid-utterance", retryable=True))
        except ConnectionClosed as exc:
            if not self._finalized:
                self._fail(self._lost(exc))
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits on the stream
            self._fail(ProviderError(self._provider.name,
                                     f"stream broke ({type(exc).__name__})", retryable=True))
        finally:
            self._done.set()

    async def _on_message(self, message: object) -> None:
        if isinstance(message, ListenV1Results):
            await self._on_results(message)
        elif isinstance(message, ListenV1Error):
            detail = self._provider.scrub(f"{message.variant}: {message.description}")
            self._fail(ProviderError(self._provider.name, f"error from Deepgram: {detail}"))
        else:
            log.log(TRACE, "deepgram message", extra={
                "provider": self._provider.name, "kind": getattr(message, "type", "?")})

    async def _on_results(self, results: ListenV1Results) -> None:
        alternatives = results.channel.alternatives
        said = alternatives[0].transcript.strip() if alternatives else ""
        if results.is_final:
            if said:
                self._finals.append(said)
            if results.from_finalize:
                self._finalized = True
                self._done.set()
            elif results.speech_final and self._on_endpoint is not None and self.text:
                await self._hook(self._on_endpoint, self.text)
            return
        so_far = " ".join([*self._finals, said]).strip()
        if self._on_partial is None or not so_far or so_far == self._shown:
            return
        self._shown = so_far
        await self._hook(self._on_partial, so_far)

    async def _hook(self, hook: PartialHook, text: str) -> None:
        try:
            await hook(text)
        except Exception:  # noqa: BLE001 - a failing hook must not end the stream
            log.warning("stream hook failed", exc_info=True,
                        extra={"provider": self._provider.name})

    async def _keep_alive(self) -> None:
        every = self._provider.config.keepalive_s
        with contextlib.suppress(ConnectionClosed, OSError):
            while True:
                idle = time.monotonic() - self._last_sent
                if idle >= every:
                    await self._socket.send_keep_alive()
                    self._last_sent, idle = time.monotonic(), 0.0
                await asyncio.sleep(every - idle)

    # --- the end --------------------------------------------------------------------------

    async def _check_usable(self) -> None:
        """Raise the stream's failure (closing it) or that it is closed already."""
        if self._failure is not None:
            await self._close("failed")
            raise self._failure
        if self._closed or self._closing:
            raise ProviderError(self._provider.name, "the stream is already closed")

    def _fail(self, error: ProviderError) -> None:
        if self._failure is None:
            self._failure = error
        self._done.set()

    def _lost(self, exc: ConnectionClosed) -> ProviderError:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = self._provider.scrub(exc.rcvd.reason) if exc.rcvd is not None else ""
        detail = f"code {code}: {reason}" if reason else f"code {code}"
        return ProviderError(self._provider.name, f"connection lost ({detail})", retryable=True)

    async def _close(self, outcome: str) -> None:
        """Stop both tasks and close the socket (once; quietly)."""
        if self._closed:
            return
        self._closed = self._closing = True
        tasks = (self._reader, self._keeper)
        for task in tasks:
            task.cancel()
        try:
            await asyncio.wait(tasks)
        finally:
            with contextlib.suppress(Exception):
                await self._stack.aclose()
            log.debug("deepgram stream closed", extra={
                "provider": self._provider.name, "outcome": outcome,
                "seconds": round(time.monotonic() - self._opened, 3),
                "audio_seconds": round(self._sent_bytes / 2 / SAMPLE_RATE, 3)})


def wav_bytes(audio: np.ndarray) -> bytes:
    """PCM16 mono 16 kHz as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.asarray(audio, dtype="<i2").tobytes())
    return out.getvalue()


def _prerecorded_transcript(response: object) -> str:
    """The first channel's best transcript; empty when there is none (e.g. a callback
    acknowledgement instead of results)."""
    channels = getattr(getattr(response, "results", None), "channels", None) or []
    alternatives = (getattr(channels[0], "alternatives", None) or []) if channels else []
    return (getattr(alternatives[0], "transcript", None) or "").strip() if alternatives else ""


def _detail(body: Any) -> str:
    """Deepgram's error text: ``{"err_code", "err_msg", "request_id"}``, else the body."""
    if isinstance(body, dict):
        text = " ".join(str(body[k]) for k in ("err_code", "err_msg") if body.get(k))
        return text or str(body)
    return str(body or "") or "no details"


def _flag(value: bool) -> str:
    return "true" if value else "false"
