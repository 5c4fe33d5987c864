"""A local ElevenLabs text-to-speech endpoint on its real wire format, for the real SDK.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`` with an
``xi-api-key`` header and a JSON body (``text``, ``model_id``, ``voice_settings``) answers
raw little-endian PCM16 mono at that rate, in chunks. The speech is espeak-ng's, so a test
can check what was said with whisper. Errors carry ElevenLabs' JSON bodies
(``{"detail": {"status", "message"}}``; a 422 has FastAPI's list): 401 for a missing or
wrong key, 400 for an unknown voice (when ``voices`` is given), 422 for a bad request.

Each request is answered by the next scripted ``Reply`` (latency before the first chunk and
between chunks, an error status, a connection dropped after some chunks), else by
``default``. Every request is recorded with how much audio went out and whether the client
went away before the end (a barge-in must cancel the upstream request).

    async with FakeElevenLabs() as fake: ...            # in the test's event loop
    with FakeElevenLabs().in_thread() as fake: ...      # its own loop in a thread
    python -m tests.support.fakes.elevenlabs --port 0   # a process; prints its URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from aiohttp import web

from tests.support.fakes.server import FakeServer, read_json, stream_chunks

API_KEY = "sk_fake0elevenlabs0key0123456789abcdef"
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_ERRORS = {
    400: ("invalid_request", "The request could not be processed."),
    401: ("invalid_api_key", "Invalid API key"),
    429: ("too_many_concurrent_requests", "Too many concurrent requests for your plan."),
    500: ("internal_server_error", "An internal server error occurred."),
    503: ("system_busy", "The system is busy, please try again later."),
}


@dataclass
class Reply:
    """How the fake answers one request."""

    status: int = 200
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunk_ms: int = 100
    drop_after_chunks: int | None = None
    """Close the connection after this many chunks, mid-body."""


@dataclass
class Request:
    """One request as the fake saw it (the key itself is not kept)."""

    voice_id: str
    query: dict[str, str]
    body: dict[str, Any]
    key_ok: bool
    status: int = 200
    chunks: int = 0
    chunks_sent: int = 0
    finished: bool = False
    """The whole audio went out."""
    client_gone: bool = False
    """The client closed the connection before the end."""
    first_chunk_at: float | None = None
    last_chunk_at: float | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class FakeElevenLabs(FakeServer[Reply]):
    name = "fake-elevenlabs"

    def __init__(self, api_key: str = API_KEY, default: Reply | None = None,
                 voices: set[str] | None = None, port: int = 0):
        super().__init__(api_key, default or Reply(), port)
        self.voices = voices
        self.requests: list[Request] = []
        self._speech: dict[str, np.ndarray] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._stream)

    # --- the endpoint -------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        key = request.headers.get("xi-api-key")
        seen = Request(request.match_info["voice_id"], dict(request.query), body,
                       key_ok=key == self.api_key)
        self.requests.append(seen)
        try:
            reply = self.next_reply()
            error = self._refusal(seen, key, reply)
            if error is not None:
                seen.status = error.status
                return error
            return await self._speak(request, seen, reply)
        finally:
            seen.ended.set()

    def _refusal(self, seen: Request, key: str | None, reply: Reply) -> web.Response | None:
        if key is None:
            return _error(401, "needs_authorization", "Neither authorization header nor "
                          "xi-api-key received, please provide one.")
        if not seen.key_ok:
            return _error(401)
        text, fmt = seen.body.get("text"), seen.query.get("output_format", "mp3_44100_128")
        if not isinstance(text, str) or not text.strip():
            return _invalid(["body", "text"], "Field required", "missing")
        if _pcm_rate(fmt) is None:
            return _invalid(["query", "output_format"], f"unsupported by this fake: {fmt}",
                            "enum")
        if self.voices is not None and seen.voice_id not in self.voices:
            return _error(400, "voice_not_found",
                          f"A voice with voice_id {seen.voice_id} was not found.")
        return None if reply.status == 200 else _error(reply.status)

    async def _speak(self, request: web.Request, seen: Request, reply: Reply
                     ) -> web.StreamResponse:
        rate = _pcm_rate(seen.query["output_format"]) or 48_000
        pcm = await self.speech(seen.body["text"], rate)
        step = max(1, rate * reply.chunk_ms // 1000)
        chunks = [pcm[i:i + step].astype("<i2").tobytes() for i in range(0, len(pcm), step)]
        seen.chunks = len(chunks)
        response = web.StreamResponse(headers={
            "Content-Type": "audio/pcm", "request-id": f"req{len(self.requests)}"})
        response.enable_chunked_encoding()
        return await stream_chunks(request, response, seen, chunks,
                                   first_delay_s=reply.first_chunk_delay_s,
                                   delay_s=reply.chunk_delay_s, drop_after=reply.drop_after_chunks)

    async def speech(self, text: str, rate: int) -> np.ndarray:
        """espeak-ng saying ``text``, int16 mono at ``rate`` (cached per text)."""
        if text not in self._speech:
            from glyphoxa_campaign.model import VoiceSpec
            from glyphoxa_tts.providers.espeak import EspeakProvider

            espeak = EspeakProvider()
            try:
                chunks = [c async for c in espeak.synthesize(text, VoiceSpec())]
            finally:
                espeak.close()
            self._speech[text] = np.concatenate(chunks)
        audio = self._speech[text]
        return audio if rate == 48_000 else soxr.resample(audio, 48_000, rate)


def _pcm_rate(output_format: str) -> int | None:
    codec, _, rate = output_format.partition("_")
    return int(rate) if codec == "pcm" and rate.isdigit() and int(rate) in PCM_RATES else None


def _error(status: int, code: str | None = None, message: str | None = None) -> web.Response:
    default_code, default_message = _ERRORS.get(status, ("error", "Request failed."))
    return web.json_response({"detail": {"status": code or default_code,
                                         "message": message or default_message}}, status=status)


def _invalid(loc: list[str], message: str, kind: str) -> web.Response:
    return web.json_response({"detail": [{"type": kind, "loc": loc, "msg": message}]},
                             status=422)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--first-chunk-delay", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()
    default = Reply(first_chunk_delay_s=args.first_chunk_delay, chunk_delay_s=args.chunk_delay)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(FakeElevenLabs(args.api_key, default, port=args.port).serve_forever())


if __name__ == "__main__":
    main()
