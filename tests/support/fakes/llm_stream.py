"""What the fake LLM endpoints share (``gemini``, ``openai_compat``): scripted replies,
recorded requests, an SSE body sent chunk by chunk, and the server's lifecycle.

Each request is answered by the next scripted ``Reply`` (its text in N chunks, latency
before the first chunk and between chunks, an error status with the vendor's JSON body,
the connection dropped after some chunks), else by ``default``. Every request is recorded
with what the client asked for and whether it went away before the end (a barge-in must
cancel the upstream request). A vendor's module adds its routes and wire format.

    async with FakeGemini() as fake: ...             # in the test's event loop
    with FakeGemini().in_thread() as fake: ...       # its own loop in a thread
    python -m tests.support.fakes.gemini --port 0    # a process; prints its URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

DEFAULT_TEXT = "Aye, that I can do. The longsword, you say? Come back at dawn."


@dataclass
class Reply:
    """How the fake answers one request."""

    text: str = DEFAULT_TEXT
    chunks: int = 3
    """The text is sent in this many chunks (split between words)."""
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    status: int = 200
    """Anything but 200 answers with the vendor's JSON error body instead."""
    drop_after_chunks: int | None = None
    """Close the connection after this many chunks, mid-stream."""
    prompt_tokens: int = 31
    completion_tokens: int = 17
    """The usage the fake reports (not a count of anything: tests see it come through)."""

    def pieces(self) -> list[str]:
        """The text in ``chunks`` pieces that join back to it."""
        words = self.text.split(" ")
        n = max(1, min(self.chunks, len(words)))
        cuts = [round(i * len(words) / n) for i in range(n + 1)]
        parts = [" ".join(words[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        return [p + (" " if i < n - 1 else "") for i, p in enumerate(parts)]


@dataclass
class Request:
    """One request as the fake saw it (the key itself is not kept)."""

    path: str
    query: dict[str, str]
    body: dict[str, Any]
    key_ok: bool
    model: str = ""
    system: str | None = None
    contents: list[tuple[str, str]] = field(default_factory=list)
    """(role, text) of the conversation, in the vendor's role names."""
    generation: dict[str, Any] = field(default_factory=dict)
    """The sampling settings: Gemini's ``generationConfig``, OpenAI's top-level fields."""
    status: int = 200
    chunks_sent: int = 0
    finished: bool = False
    """The whole reply went out."""
    client_gone: bool = False
    """The client closed the connection before the end."""
    first_chunk_at: float | None = None
    last_chunk_at: float | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class FakeLLMServer:
    """An aiohttp server on 127.0.0.1; subclasses add ``routes`` and the wire format."""

    name = "fake-llm"

    def __init__(self, api_key: str, default: Reply | None = None, port: int = 0):
        self.api_key, self.default, self.port = api_key, default or Reply(), port
        self.replies: deque[Reply] = deque()
        self.requests: list[Request] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> Self:
        """Answer the next requests with these, in order (then with ``default``)."""
        self.replies.extend(replies)
        return self

    def next_reply(self) -> Reply:
        return self.replies.popleft() if self.replies else self.default

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Serve from a thread of its own (for a test whose loop drives a real process)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # --- the stream ---------------------------------------------------------------------

    async def stream_events(
        self, request: web.Request, seen: Request, reply: Reply, events: list[bytes]
    ) -> web.StreamResponse:
        """Send ``events`` (whole SSE events) with the reply's timing; ``drop_after_chunks``
        cuts the connection; a client that goes away is noticed within 10 ms."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for n, event in enumerate(events):
            delay = reply.first_chunk_delay_s if n == 0 else reply.chunk_delay_s
            if not await _pause(request, delay):
                seen.client_gone = True
                return response
            if n == reply.drop_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return response
            if not await _send(request, response, event):
                seen.client_gone = True
                return response
            seen.chunks_sent += 1
            seen.last_chunk_at = time.monotonic()
            seen.first_chunk_at = seen.first_chunk_at or seen.last_chunk_at
        await response.write_eof()
        seen.finished = True
        return response


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``data`` (JSON unless already a string)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\r\n\r\n".encode()


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


async def _pause(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client has gone away."""
    deadline = time.monotonic() + seconds
    while True:
        if request.transport is None or request.transport.is_closing():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, 0.01))


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> bool:
    """Write one event; False when the client has gone away."""
    if request.transport is None or request.transport.is_closing():
        return False
    try:
        await response.write(data)
    except ConnectionError:
        return False
    return True


def serve_main(factory: type[FakeLLMServer], default_key: str, doc: str) -> None:
    """``python -m tests.support.fakes.<vendor>``: serve until interrupted, print the URL."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=default_key)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--first-chunk-delay", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()
    default = Reply(text=args.text, chunks=args.chunks,
                    first_chunk_delay_s=args.first_chunk_delay, chunk_delay_s=args.chunk_delay)

    async def serve() -> None:
        async with factory(args.api_key, default, port=args.port) as fake:
            print(fake.url, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
