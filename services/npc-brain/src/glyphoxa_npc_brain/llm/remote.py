"""What the cloud LLM providers share: a vendor stream that a cancel or a close cuts at
once, and HTTP failures mapped to ``ProviderError`` with no API key in the message.

No vendor SDK is imported here; each provider module maps its own exceptions with these.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_runtime.providers import scrub as scrub  # shared with the embedders
from glyphoxa_runtime.providers import status_error as status_error

T = TypeVar("T")

_TRANSPORTS = frozenset({"aiohttp", "httpx", "httpx2", "httpcore", "anyio"})


def transport_error(
    provider: str, exc: BaseException, secret: str, timeout_s: float
) -> ProviderError | None:
    """A connection that failed, broke off or timed out (the SDKs' HTTP clients raise their
    own exceptions: aiohttp, httpx or httpx2): another attempt may get through. None if
    ``exc`` is no transport error."""
    modules = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    if not (modules & _TRANSPORTS or isinstance(exc, OSError | TimeoutError)):
        return None
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return ProviderTimeout(provider, timeout_s)
    detail = scrub(str(exc), secret) or "no detail"
    return ProviderError(provider, f"connection failed: {type(exc).__name__}: {detail}",
                         retryable=True)


def unexpected_error(provider: str, exc: BaseException, secret: str) -> ProviderError:
    """Anything else the SDK raised (an answer it could not read, a bug): not retried."""
    detail = scrub(str(exc), secret) or "no detail"
    return ProviderError(provider, f"{type(exc).__name__}: {detail}")


@dataclass(frozen=True)
class _Failed:
    exc: Exception


_END = object()


async def relay(
    open_stream: Callable[[], Awaitable[AsyncIterator[T]]],
    cancel: asyncio.Event,
    map_error: Callable[[Exception], ProviderError],
    name: str,
) -> AsyncIterator[T]:
    """Yield the items of the vendor stream until it ends or ``cancel`` is set.

    A task of its own reads the stream, so a cancel, a timeout or the close of this
    generator cancels the read right where it waits: that runs the SDK's own cleanup, which
    closes the HTTP response, and the upstream sees the disconnect at once (an abandoned
    SDK generator would only be closed whenever the garbage collector finalizes it). The
    queue holds at most one item per text chunk of a reply capped by ``max_tokens``.
    Vendor exceptions come out as ``map_error`` made them.
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def read() -> None:
        try:
            async for item in await open_stream():
                queue.put_nowait(item)
        except Exception as exc:  # handed over and raised on the consumer's side
            queue.put_nowait(_Failed(exc))
        finally:
            queue.put_nowait(_END)

    async def watch() -> None:
        await cancel.wait()
        queue.put_nowait(_END)

    reader = asyncio.create_task(read(), name=f"{name}-read")
    watcher = asyncio.create_task(watch(), name=f"{name}-cancel")
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise map_error(item.exc) from item.exc
            yield item  # type: ignore[misc]
    finally:
        reader.cancel()
        watcher.cancel()
        await asyncio.wait({reader, watcher})
