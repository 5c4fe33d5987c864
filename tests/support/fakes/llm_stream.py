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
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.fakes.server import FakeServer, stream_chunks

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


class FakeLLMServer(FakeServer[Reply]):
    """Subclasses add ``routes`` and the wire format."""

    name = "fake-llm"

    def __init__(self, api_key: str, default: Reply | None = None, port: int = 0):
        super().__init__(api_key, default or Reply(), port)
        self.requests: list[Request] = []

    # --- the stream ---------------------------------------------------------------------

    async def stream_events(
        self, request: web.Request, seen: Request, reply: Reply, events: list[bytes]
    ) -> web.StreamResponse:
        """Send ``events`` (whole SSE events) with the reply's timing; ``drop_after_chunks``
        cuts the connection; a client that goes away is noticed within 10 ms."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        return await stream_chunks(request, response, seen, events,
                                   first_delay_s=reply.first_chunk_delay_s,
                                   delay_s=reply.chunk_delay_s, drop_after=reply.drop_after_chunks)


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``data`` (JSON unless already a string)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\r\n\r\n".encode()


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

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(factory(args.api_key, default, port=args.port).serve_forever())
