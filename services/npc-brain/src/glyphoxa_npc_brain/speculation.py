"""A reply started before the player's line is final (``BRAIN_SPECULATE``).

A streaming recognizer (Deepgram) publishes interim transcripts while the player speaks
and during vad's end-of-turn silence. When one of them is addressed to an NPC, the brain
starts that NPC's reply on it at once, into a buffer: nothing is published. When the final
transcript arrives and says the same words to the same NPC, with nothing else happened in
the session meanwhile, the turn takes over the reply already under way instead of
starting the LLM only then; otherwise the guess is cancelled. The tokens a discarded
guess cost are still counted (usage ``llm:<turn>:guess<n>:<attempt>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import aclosing

from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage
from glyphoxa_npc_brain.llm.chain import ProviderChain
from glyphoxa_runtime.providers import ProviderError

_NOT_WORD = re.compile(r"[^\w']+")


def same_words(text: str) -> str:
    """The words of ``text``, lower case, without punctuation: what a guess is matched on."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


class Guess:
    """One reply started early; ``source(...)`` hands it to the turn that adopts it."""

    def __init__(self, words: str, npc: str, epoch: int, chain: ProviderChain, system: str,
                 messages: list[ChatMessage], *, max_tokens: int, seed: int):
        self.words, self.npc, self.epoch = words, npc, epoch
        self.chain = chain
        self.calls: list[CallStats] = []
        self._deltas: list[str] = []
        self._error: ProviderError | None = None
        self._done = False
        self._wake = asyncio.Event()
        self._cancel = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(system, messages, max_tokens, seed), name="brain-guess")

    async def _run(self, system: str, messages: list[ChatMessage], max_tokens: int,
                   seed: int) -> None:
        try:
            stream = self.chain.stream(system, messages, max_tokens=max_tokens, seed=seed,
                                       cancel=self._cancel, calls=self.calls)
            async with aclosing(stream) as deltas:
                async for delta in deltas:
                    self._deltas.append(delta)
                    self._wake.set()
        except ProviderError as exc:
            self._error = exc
        finally:
            self._done = True
            self._wake.set()

    async def cancel(self) -> None:
        self._cancel.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def source(self) -> _Adopted:
        return _Adopted(self)

    async def replay(self, cancel: asyncio.Event) -> AsyncIterator[str]:
        """What the guess said so far, then the rest as it comes; stops on ``cancel``."""
        watcher = asyncio.create_task(self._forward(cancel), name="brain-guess-cancel")
        try:
            shown = 0
            while True:
                if shown < len(self._deltas):
                    shown += 1
                    yield self._deltas[shown - 1]
                    continue
                if self._done or cancel.is_set():
                    break
                self._wake.clear()
                if shown < len(self._deltas) or self._done:
                    continue
                await self._wake.wait()
            if self._error is not None and not cancel.is_set():
                raise self._error
        finally:
            watcher.cancel()
            if not self._done:
                await self.cancel()

    async def _forward(self, cancel: asyncio.Event) -> None:
        await cancel.wait()
        self._cancel.set()
        self._wake.set()


class _Adopted:
    """A ``ReplySource`` whose first stream is the guess; a retry asks the chain anew."""

    def __init__(self, guess: Guess):
        self._guess = guess
        self._used = False

    @property
    def served_by(self) -> str | None:
        return self._guess.chain.served_by

    def stream(self, system: str, messages: list[ChatMessage], *, max_tokens: int, seed: int,
               cancel: asyncio.Event, calls: list[CallStats] | None = None) -> AsyncIterator[str]:
        if self._used:
            return self._guess.chain.stream(system, messages, max_tokens=max_tokens, seed=seed,
                                            cancel=cancel, calls=calls)
        self._used = True
        return self._first(cancel, calls)

    async def _first(self, cancel: asyncio.Event,
                     calls: list[CallStats] | None) -> AsyncIterator[str]:
        try:
            async for delta in self._guess.replay(cancel):
                yield delta
        finally:
            if calls is not None:
                calls.extend(self._guess.calls)
