"""What every fake vendor server shares: an aiohttp server on 127.0.0.1 (in the test's loop,
in a thread of its own, or as a process), scripted replies, recorded requests, and the
small helpers for streaming to a client that may go away mid-response."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, Protocol, Self, TypeVar

from aiohttp import web

R = TypeVar("R")


class FakeServer(Generic[R]):
    """Subclasses add their ``routes``; each request takes ``next_reply()``."""

    name = "fake"

    def __init__(self, api_key: str, default: R, port: int = 0):
        self.api_key, self.default, self.port = api_key, default, port
        self.replies: deque[R] = deque()
        self.requests: list[Any] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: R) -> Self:
        """Answer the next requests with these, in order (then with ``default``)."""
        self.replies.extend(replies)
        return self

    def next_reply(self) -> R:
        return self.replies.popleft() if self.replies else self.default

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

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

    async def serve_forever(self) -> None:
        """``python -m tests.support.fakes.<vendor>``: print the URL, serve until killed."""
        async with self:
            print(self.url, flush=True)
            await asyncio.Event().wait()


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or ``{}`` when it is not one."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def pause(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client has gone away."""
    deadline = time.monotonic() + seconds
    while True:
        if client_gone(request):
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, 0.01))


async def send(request: web.Request, response: web.StreamResponse, data: bytes) -> bool:
    """Write one chunk; False when the client has gone away."""
    if client_gone(request):
        return False
    try:
        await response.write(data)
    except ConnectionError:
        return False
    return True


class Delivered(Protocol):
    """What a fake records of a streamed answer (its ``Request`` dataclass has these)."""

    chunks_sent: int
    finished: bool
    client_gone: bool
    first_chunk_at: float | None
    last_chunk_at: float | None


async def stream_chunks(request: web.Request, response: web.StreamResponse, seen: Delivered,
                        chunks: list[bytes], *, first_delay_s: float, delay_s: float,
                        drop_after: int | None) -> web.StreamResponse:
    """Start ``response`` and send ``chunks`` on it: ``first_delay_s`` before the first,
    ``delay_s`` between the others, the connection cut before chunk ``drop_after``; a client
    that goes away (even before the headers) is noticed within 10 ms. ``seen`` records what
    went out and when."""
    try:
        await response.prepare(request)
    except ConnectionResetError:
        seen.client_gone = True
        return response
    for n, data in enumerate(chunks):
        if not await pause(request, first_delay_s if n == 0 else delay_s):
            seen.client_gone = True
            return response
        if n == drop_after:
            request.transport.close()  # type: ignore[union-attr]
            return response
        if not await send(request, response, data):
            seen.client_gone = True
            return response
        seen.chunks_sent += 1
        seen.last_chunk_at = time.monotonic()
        seen.first_chunk_at = seen.first_chunk_at or seen.last_chunk_at
    await response.write_eof()
    seen.finished = True
    return response
