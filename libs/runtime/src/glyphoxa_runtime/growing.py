"""A list one task fills while others read it from the start, waiting for more as it grows:
a reply or a sentence's audio made ahead, handed on while it is still being made."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Growing(Generic[T]):
    def __init__(self) -> None:
        self.items: list[T] = []
        self.done = False
        self._wake = asyncio.Event()

    def extend(self, items: Iterable[T]) -> None:
        self.items.extend(items)
        self._wake.set()

    def finish(self) -> None:
        """No more items will come."""
        self.done = True
        self._wake.set()

    def wake(self) -> None:
        """Let readers look again (e.g. at their ``stop`` event)."""
        self._wake.set()

    async def follow(self, stop: asyncio.Event | None = None) -> AsyncIterator[T]:
        """Every item, those already here first, then each as it comes, until ``finish``;
        with ``stop`` set, ends once the items already here are out (``wake`` makes a
        waiting reader notice)."""
        shown = 0
        while True:
            if shown < len(self.items):
                shown += 1
                yield self.items[shown - 1]
                continue
            if self.done or (stop is not None and stop.is_set()):
                return
            self._wake.clear()
            if shown < len(self.items) or self.done:
                continue
            await self._wake.wait()
