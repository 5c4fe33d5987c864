"""Streaming recognition of one utterance, alongside the buffer the stage keeps anyway.

A ``LiveRecognition`` opens the provider's stream without holding up the session (the
connect happens while the player is still speaking), feeds it the chunks in the order
they arrive and, at the utterance's end, hands back the provider's final result. When the
stream cannot be opened or breaks, it stops quietly and records why: the stage then
transcribes the buffered audio another way, so nothing said is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_stt.providers.base import (
    EndpointHook,
    PartialHook,
    SttHints,
    SttProvider,
    SttResult,
    SttStream,
)

log = logging.getLogger("glyphoxa.stt.live")

_END = object()


class LiveRecognition:
    def __init__(self, provider: SttProvider, hints: SttHints, on_partial: PartialHook | None,
                 finish_timeout_s: float, on_endpoint: EndpointHook | None = None):
        self.provider = provider
        self.error: ProviderError | None = None
        self.finishing = False
        """``finish`` was called: an endpoint arriving now is too late to matter."""
        self.early_text: str | None = None
        """The text already published as the final when the provider heard the speaker stop."""
        self._hints, self._on_partial, self._on_endpoint = hints, on_partial, on_endpoint
        self._finish_timeout_s = finish_timeout_s
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name=f"stt-live-{provider.name}")

    def send(self, pcm: bytes) -> None:
        if self.error is None and not self._task.done():
            self._queue.put_nowait(pcm)

    async def finish(self) -> SttResult | None:
        """The stream's final result, or None (``error`` says why) within the timeout."""
        self.finishing = True
        self._queue.put_nowait(_END)
        try:
            async with asyncio.timeout(self._finish_timeout_s):
                return await asyncio.shield(self._task)
        except TimeoutError:
            self.error = ProviderTimeout(self.provider.name, self._finish_timeout_s)
            await self.abort()
            return None

    async def abort(self) -> None:
        self.finishing = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _run(self) -> SttResult | None:
        stream: SttStream | None = None
        try:
            stream = await self.provider.open_stream(self._hints, self._on_partial,
                                                     self._on_endpoint)
            while (item := await self._queue.get()) is not _END:
                await stream.send(item)  # type: ignore[arg-type]
            result = await stream.finish()
            stream = None  # finished: nothing to abort
            return result
        except ProviderError as exc:
            self.error = exc
            return None
        except Exception as exc:  # noqa: BLE001 - a provider bug costs the stream, not the line
            log.exception("streaming recognition failed", extra={"provider": self.provider.name})
            self.error = ProviderError(self.provider.name, f"{type(exc).__name__}: {exc}")
            return None
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.abort())
