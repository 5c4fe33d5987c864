"""A reply started before the player's line is final (``BRAIN_SPECULATE``).

A streaming recognizer (Deepgram) publishes interim transcripts while the player speaks
and during vad's end-of-turn silence. When one of them is addressed to an NPC, the brain
starts that NPC's reply on it at once, into a buffer: nothing is published. When the final
transcript arrives and says the same words to the same NPC, with nothing else happened in
the session meanwhile, the turn takes over the reply already under way instead of
starting the LLM only then; otherwise the guess is cancelled. The tokens a discarded
guess cost are still counted (usage ``llm:<turn>:guess<n>:<attempt>``).

A guess also sends its first sayable sentence to tts at once as a held chunk
(``BRAIN_SPECULATE_AUDIO``, turn ``<turn>.guess<n>``): tts synthesizes it but publishes
nothing. The adopted turn's first chunk claims that audio when it says the same sentence,
so first audio can follow the final transcript at once; a guess that is dropped, or whose
turn does not claim it, discards it with the held turn's empty final chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import aclosing

from glyphoxa_events.models import ReplyChunk
from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage
from glyphoxa_npc_brain.llm.chain import ProviderChain
from glyphoxa_npc_brain.turn import ReplyWriter
from glyphoxa_runtime.growing import Growing
from glyphoxa_runtime.providers import ProviderError

_NOT_WORD = re.compile(r"[^\w']+")


def same_words(text: str) -> str:
    """The words of ``text``, lower case, without punctuation: what a guess is matched on."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


class HeldSentence:
    """A guess's first sayable sentence, sent to tts to be synthesized ahead (``hold``).

    ``writer`` (the held turn's, ``<turn>.guess<n>``) only cleans and addresses: the chunks
    are the held one (index 0) and, unless a turn claims it, the discard (index 1, empty,
    final).
    """

    def __init__(self, writer: ReplyWriter):
        self.writer = writer
        self.text = ""
        self.settled = asyncio.Event()
        """Set once the sentence is known (and sent), or known never to come."""
        self._splitter = writer.splitter()
        self._over = False

    async def feed(self, delta: str) -> None:
        if self.settled.is_set():
            return
        for raw in self._splitter.feed(delta):
            if await self._hold(raw):
                return

    async def end(self) -> None:
        """The guess's stream is over: its unfinished rest is the sentence, if sayable."""
        if not self.settled.is_set():
            await self._hold(self._splitter.flush())
        self.settled.set()

    async def claim(self, text: str) -> str | None:
        """The held turn id, when the adopting turn's first sentence is the held one;
        otherwise the held one is discarded."""
        await self.settled.wait()
        if self.text and self.text == text and not self._over:
            self._over = True
            return self.writer.turn_id
        await self.discard()
        return None

    async def discard(self) -> None:
        self.settled.set()
        if self.text and not self._over:
            self._over = True
            await self._publish(1, "", final=True)

    async def _hold(self, raw: str) -> bool:
        text = self.writer.clean(raw)
        if not text:
            return False
        self.text = text  # before the publish: a cancel during it still discards
        try:
            await self._publish(0, text, final=False)
        finally:
            self.settled.set()
        return True

    async def _publish(self, index: int, text: str, *, final: bool) -> None:
        w = self.writer
        await w.send(ReplyChunk(turn_id=w.turn_id, npc=w.npc, index=index, text=text,
                                final=final, published_ns=w.clock(), hold=True))


class Guess:
    """One reply started early; ``source(...)`` hands it to the turn that adopts it."""

    def __init__(self, words: str, npc: str, epoch: int, chain: ProviderChain, system: str,
                 messages: list[ChatMessage], *, max_tokens: int, seed: int,
                 held: HeldSentence | None = None):
        self.words, self.npc, self.epoch = words, npc, epoch
        self.chain = chain
        self.held = held
        self.calls: list[CallStats] = []
        self.memories: tuple[str, ...] = ()  # the recalled memories its prompt holds
        self._deltas: Growing[str] = Growing()
        self._error: ProviderError | None = None
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
                    self._deltas.extend((delta,))
                    if self.held is not None:
                        await self.held.feed(delta)
            if self.held is not None:
                await self.held.end()
        except ProviderError as exc:
            self._error = exc
        finally:
            self._deltas.finish()
            if self.held is not None:
                self.held.settled.set()

    async def cancel(self) -> None:
        """Stop the guess; its held sentence, if any, is discarded."""
        self._cancel.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.held is not None:
            await self.held.discard()

    async def claim(self, text: str) -> str | None:
        return await self.held.claim(text) if self.held is not None else None

    def source(self) -> _Adopted:
        return _Adopted(self)

    async def replay(self, cancel: asyncio.Event) -> AsyncIterator[str]:
        """What the guess said so far, then the rest as it comes; stops on ``cancel``."""
        watcher = asyncio.create_task(self._forward(cancel), name="brain-guess-cancel")
        try:
            async for delta in self._deltas.follow(stop=cancel):
                yield delta
            if self._error is not None and not cancel.is_set():
                raise self._error
        finally:
            watcher.cancel()
            if not self._deltas.done:
                await self.cancel()

    async def _forward(self, cancel: asyncio.Event) -> None:
        await cancel.wait()
        self._cancel.set()
        self._deltas.wake()


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
