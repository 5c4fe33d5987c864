"""One NPC reply: stream the LLM, cut sentences, clean them, publish each at once.

Each sentence is published as a ``ReplyChunk`` (``reply:T.S:<turn>:<index>``) the moment
it is complete; the last chunk has ``final: true`` (an empty final chunk closes a reply
whose end was only known after its last sentence). A reply stops after
``max_sentences`` sentences or ``max_tokens`` tokens. Cancelling (barge-in, flush) stops
the LLM at the next token and publishes nothing more except, if sentences were already
out, an empty final chunk so tts knows the reply is over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from rapidfuzz import fuzz

from glyphoxa_bus.publisher import hand_over
from glyphoxa_events import headers as H
from glyphoxa_events.models import FailureStage, Outcome, ReplyChunk, TurnFailure
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_npc_brain.cleaning import clean_for_voice
from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, ReplySource
from glyphoxa_npc_brain.sentences import SentenceSplitter
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout

log = logging.getLogger(__name__)

Clock = Callable[[], int]


class Sink(Protocol):
    """Where chunks and events go (``glyphoxa_bus.publisher.Publisher`` in the service)."""

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None: ...


def seed_for(turn_id: str) -> int:
    """The sampling seed of a turn: a replica redoing the turn samples the same way."""
    return int.from_bytes(hashlib.sha256(turn_id.encode()).digest()[:4], "big") & 0x7FFFFFFF


class TurnCancel:
    """Set by barge-in/flush while a turn is generating; the reason ends up in the turn event."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


@dataclass
class ReplyWriter:
    """Publishes the sentences of one reply as ``ReplyChunk`` messages."""

    sink: Sink
    subjects: SessionSubjects
    turn_id: str
    npc: str
    speech_end_ns: int
    clock: Clock
    max_sentences: int = 3
    names: tuple[str, ...] = ()
    heard: str = ""  # the player's line: a sentence that only parrots it is dropped
    claim: Callable[[str], Awaitable[str | None]] | None = None
    """Asked with the first sentence: the held turn whose audio already says it (tts plays
    that instead of synthesizing), if any (``BRAIN_SPECULATE``)."""
    trace: Mapping[str, str] = field(default_factory=dict)
    """The turn span's context (``traceparent``), carried by every chunk."""
    first_clause: bool = False
    """The reply's first piece may be a clause ("Aye, | ..."): ``SentenceSplitter``'s
    ``first_clause``. It does not count as one of the ``max_sentences``."""
    sentences: list[str] = field(default_factory=list)
    first_token_ns: int = 0
    first_sentence_ns: int = 0
    finished: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def _sayable(self, raw: Iterable[str]) -> list[str]:
        return [s for s in (clean_for_voice(r, self.names) for r in raw)
                if s and not parrots(s, self.heard) and not out_of_character(s)]

    def sayable(self, raw: str) -> bool:
        return bool(self._sayable([raw]))

    def clean(self, raw: str) -> str:
        """``raw`` as it would be spoken, or "" when it would be dropped."""
        spoken = self._sayable([raw])
        return spoken[0] if spoken else ""

    async def add(self, raw: Iterable[str], *, last: bool = False) -> bool:
        """Clean and publish sentences; True once the reply is complete (cap or ``last``)."""
        spoken = self._sayable(raw)
        for n, sentence in enumerate(spoken):
            final = (last and n == len(spoken) - 1) or len(self.sentences) + 1 >= self._limit()
            await self._publish(sentence, final)
            if final:
                return True
        if last:
            await self.close()
        return self.finished

    def splitter(self) -> SentenceSplitter:
        return SentenceSplitter(first_clause=self.first_clause)

    def _limit(self) -> int:
        """``max_sentences`` pieces, one more when the first was only a clause."""
        clause = self.first_clause and self.sentences and not _ENDS.search(self.sentences[0])
        return self.max_sentences + (1 if clause else 0)

    async def close(self) -> None:
        """End the reply with an empty final chunk unless the last sentence was final."""
        if not self.finished:
            await self._publish("", True)

    async def _publish(self, text: str, final: bool) -> None:
        now = self.clock()
        index = len(self.sentences)
        if text:
            self.sentences.append(text)
            self.first_sentence_ns = self.first_sentence_ns or now
        self.finished = final
        claims = await self.claim(text) if self.claim is not None and index == 0 and text \
            else None
        chunk = ReplyChunk(
            turn_id=self.turn_id,
            npc=self.npc,
            index=index,
            text=text,
            final=final,
            speech_end_ns=self.speech_end_ns,
            first_token_ns=self.first_token_ns,
            published_ns=now,
            claims=claims,
        )
        await self.send(chunk)

    async def send(self, chunk: ReplyChunk) -> None:
        """Publish ``chunk`` on its NPC's reply subject, under its turn and index."""
        s = self.subjects
        await self.sink.publish(
            s.reply(chunk.npc),
            chunk.to_bytes(),
            f"reply:{s.tenant}.{s.session}:{chunk.turn_id}:{chunk.index}",
            {H.TURN: chunk.turn_id, **self.trace},
        )
        if chunk.index == 0 and chunk.text and not chunk.hold:  # the one tts waits for
            await hand_over()


def parrots(sentence: str, heard: str, threshold: float = 80.0) -> bool:
    """True when a reply sentence mostly repeats the player's line (small models do that)."""
    if not heard:
        return False
    said = _words(sentence)
    return bool(said) and fuzz.ratio(said, _words(heard)) >= threshold


_ASSISTANT_SPEAK = re.compile(
    r"\b(as an ai|an ai (language )?model|language model|i('m| am) (just )?an ai|"
    r"i('m| am) sorry,? but i (can'?t|cannot|am unable to) (assist|help) with|"
    r"real-?time (information|data|updates)|as of my (last )?(knowledge|training)|"
    r"my training data|i('m| am) (just )?an? (computer program|virtual assistant|ai assistant))",
    re.IGNORECASE)


_ENDS = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")


def out_of_character(sentence: str) -> bool:
    """Assistant boilerplate ("I'm sorry, but I can't assist with that.") is never in character."""
    return bool(_ASSISTANT_SPEAK.search(sentence))


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


@dataclass(frozen=True)
class TurnResult:
    outcome: Outcome
    reason: str
    llm_provider: str | None = None
    """The LLM provider that spoke the reply, if one did."""
    failure: TurnFailure | None = None
    """Where and why a failed, timed-out or cancelled turn stopped."""
    memories: tuple[str, ...] = ()
    """The recalled memories that went into the reply's prompt."""


def llm_failure(error: str, *, provider: str | None = None,
                retryable: bool | None = None) -> TurnFailure:
    """The failure of a turn's reply generation (``TurnEnded.failure``)."""
    return TurnFailure(stage=FailureStage.llm, provider=provider and provider[:64],
                       error=error[:300], retryable=retryable)


async def stream_reply(
    llm: ReplySource,
    writer: ReplyWriter,
    system: str,
    messages: list[ChatMessage],
    *,
    max_tokens: int,
    timeout_s: float,
    cancel: TurnCancel,
    attempts: int = 3,
    retry_messages: list[ChatMessage] | None = None,
    calls: list[CallStats] | None = None,
) -> TurnResult:
    """Generate and publish the reply; the outcome says how it ended. The usage of every
    LLM call attempt is appended to ``calls``."""
    try:
        async with asyncio.timeout(timeout_s):
            for attempt in range(attempts):
                splitter = writer.splitter()
                done = await _pump(llm, writer, splitter, system, messages, max_tokens, cancel,
                                   attempt, calls)
                if not done and cancel.cancelled:
                    return await _stopped(writer, Outcome.cancelled, cancel.reason,
                                          llm_failure(cancel.reason, retryable=False))
                if done:
                    break
                rest = splitter.flush()
                if writer.sentences or writer.sayable(rest) or attempt == attempts - 1:
                    await writer.add([rest], last=True)
                    break
                # nothing sayable (a refusal, a parrot): sample again with only the line (long
                # context is what confuses small models most), nudged into character
                messages = retry_messages or messages
                messages = [*messages[:-1], ChatMessage(
                    messages[-1].role, f"{messages[-1].content}\n(Answer in character.)")]
            if not writer.sentences:
                reason = "the model gave no usable reply"
                return TurnResult(Outcome.failed, reason,
                                  failure=llm_failure(reason, retryable=False))
            return TurnResult(Outcome.answered, "")
    except TimeoutError:
        reason = f"no complete reply within {timeout_s:.1f} s"
        return await _stopped(writer, Outcome.timed_out, reason,
                              llm_failure(reason, retryable=True))
    except ProviderTimeout as exc:
        return await _stopped(writer, Outcome.timed_out, str(exc), llm_failure(
            str(exc), provider=exc.provider, retryable=exc.retryable))
    except ProviderError as exc:
        log.warning(
            "llm failed: %s", exc, extra={"turn": writer.turn_id, "retryable": exc.retryable}
        )
        return await _stopped(writer, Outcome.failed, str(exc), llm_failure(
            str(exc), provider=exc.provider, retryable=exc.retryable))


async def _pump(
    llm: ReplySource,
    writer: ReplyWriter,
    splitter: SentenceSplitter,
    system: str,
    messages: list[ChatMessage],
    max_tokens: int,
    cancel: TurnCancel,
    attempt: int = 0,
    calls: list[CallStats] | None = None,
) -> bool:
    """Feed the LLM stream into the writer; True once the sentence cap ended the reply."""
    stream = llm.stream(system, messages, max_tokens=max_tokens,
                        seed=seed_for(writer.turn_id) + attempt, cancel=cancel.event, calls=calls)
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            writer.first_token_ns = writer.first_token_ns or writer.clock()
            if cancel.cancelled:
                return False
            if await writer.add(splitter.feed(delta)):
                return True
    return False


async def _stopped(
    writer: ReplyWriter, outcome: Outcome, reason: str, failure: TurnFailure
) -> TurnResult:
    if writer.sentences and not writer.finished:
        await writer.close()
    return TurnResult(outcome, reason, failure=failure)
