"""The brain of one session: final transcripts in, reply chunks and turn events out.

Knows nothing about NATS: it gets parsed control events and input messages from
``glyphoxa_bus.session.serve_session`` and publishes through a ``Sink``. Every final
transcript becomes exactly one ``turn`` event (answered, not addressed, muted,
cancelled, failed or timed out), preceded by the ``usage`` of each LLM call attempt. A
turn is handled inline, so input stays in order; barge-in and flush arrive through
``on_control`` meanwhile and stop the LLM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from glyphoxa_bus.publisher import PublishError
from glyphoxa_bus.session import InputMessage
from glyphoxa_bus.usage import publish_usage
from glyphoxa_events.models import (
    Event,
    FailureStage,
    Flush,
    MalformedEvent,
    NpcForgot,
    NpcSpeak,
    NpcTaught,
    Outcome,
    SessionStarted,
    Transcript,
    TurnEnded,
    TurnFailure,
    TurnLatency,
    parse_as,
)
from glyphoxa_events.subjects import SessionSubjects, parse_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_npc_brain.config import TurnPolicy
from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, usage_of
from glyphoxa_npc_brain.llm.pool import LLMPool
from glyphoxa_npc_brain.memory import SessionMemory
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_npc_brain.prompt import build_prompt, system_prompt
from glyphoxa_npc_brain.recall import EarlyRecall, Memories, Recaller
from glyphoxa_npc_brain.routing import Router, RoutingDecision
from glyphoxa_npc_brain.sentences import SentenceSplitter
from glyphoxa_npc_brain.speculation import Guess, HeldSentence, same_words
from glyphoxa_npc_brain.traces import TurnTrace
from glyphoxa_npc_brain.turn import (
    ReplyWriter,
    Sink,
    TurnCancel,
    TurnResult,
    seed_for,
    stream_reply,
)
from glyphoxa_runtime.recent import Recent

log = logging.getLogger("glyphoxa.npc_brain")

STAGE = "npc-brain"
MAX_GUESSES = 2
"""Replies started early per utterance at most (each new interim wording restarts one)."""
MAX_OPEN_GUESSES = 4


@dataclass
class _ActiveTurn:
    turn_id: str
    npc: str
    speech_end_ns: int
    seq: int
    cancel: TurnCancel


class BrainHandler:
    """``SessionHandler`` of npc-brain for one session."""

    def __init__(
        self,
        subjects: SessionSubjects,
        sink: Sink,
        llms: LLMPool,
        policy: TurnPolicy,
        metrics: BrainMetrics,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        stage: str = STAGE,
        recaller: Recaller | None = None,
    ):
        self.subjects, self._sink, self._llms = subjects, sink, llms
        self._recall = (EarlyRecall(recaller, subjects.tenant, subjects.session)
                        if recaller is not None else None)
        self.policy, self._metrics, self._stage = policy, metrics, stage
        self._clock, self._monotonic = clock, monotonic
        self.memory = SessionMemory()
        self._router: Router | None = None
        self._active: _ActiveTurn | None = None
        self._gm_lines: deque[tuple[float, NpcSpeak]] = deque(maxlen=64)
        self._prime_task: asyncio.Task[None] | None = None
        self._guesses: dict[str, Guess] = {}
        self._guessed: Recent[str, int] = Recent(256)  # per utterance; a final may never come
        self._epoch = 0
        self._trace: TurnTrace | None = None
        """Turns ended so far: a guess made before another turn ended has a stale prompt."""

    def _log(self, **more: object) -> dict[str, object]:
        return {"tenant": self.subjects.tenant, "session": self.subjects.session, **more}

    # --- control ------------------------------------------------------------------------

    async def on_control(self, event: Event) -> None:
        self.memory.apply(event)
        if isinstance(event, SessionStarted) and self._router is None:
            self._router = Router(event.campaign, self.policy.followup_window_s)
            self._start_priming()
        elif isinstance(event, Flush):
            # A raw ctl.bargein is not a cancel: players talk while an NPC thinks all the
            # time. The edge, which knows whether an NPC is audible, flushes (ADR 0003).
            active = self._active
            if active is not None and (
                event.turn_id == active.turn_id
                or (event.turn_id is None and event.npc in (None, active.npc))
            ):
                active.cancel.cancel(f"flush: {event.reason}")
        elif isinstance(event, NpcSpeak):
            self._gm_lines.append((self._monotonic(), event))
            self._epoch += 1  # a GM line changes what a guessed reply should have known
        elif isinstance(event, NpcTaught | NpcForgot):
            self._epoch += 1  # so does a taught or forgotten fact: the system prompt changed

    def _start_priming(self) -> None:
        if not self.policy.prime_personas:
            return
        campaign = self.memory.campaign
        assert campaign is not None

        async def prime() -> None:
            # the system prompt a turn starts with (persona and what the NPC knows as the
            # session started): a fact taught later changes its end, evaluated on the next turn
            for npc in campaign.npcs:
                await self._llms.prime(campaign, npc, system_prompt(npc, campaign, self.memory))

        self._prime_task = asyncio.create_task(prime(), name=f"prime-{self.subjects.session}")

    # --- input --------------------------------------------------------------------------

    async def on_message(self, msg: InputMessage) -> None:
        transcript = _parse_transcript(msg)
        if not transcript.final:
            if self.policy.speculate:
                await self._guess(transcript)
            return
        if self.memory.has_ended(transcript.utterance_id):
            log.debug("turn already ended, skipping", extra=self._log(turn=transcript.utterance_id))
            return
        if self._router is None:
            raise MalformedEvent("transcript before session.started")
        await self._take_turn(transcript, msg.stream_seq, msg.headers)

    # --- replies started on interim transcripts (BRAIN_SPECULATE) -------------------------

    async def _guess(self, t: Transcript) -> None:
        """Start the reply an interim transcript asks for, if it is addressed to an NPC."""
        if self._router is None or self._active is not None or self.memory.has_ended(
                t.utterance_id):
            return
        words = same_words(t.text)
        current = self._guesses.get(t.utterance_id)
        if not words or (current is not None and current.words == words
                         and current.epoch == self._epoch):
            return
        decision = self._router.route(t.text, t.start_ns, self.memory.last_address)
        if current is not None:
            await self._drop(t.utterance_id)
        npc_token = decision.npc
        if npc_token is None or self.memory.is_muted(npc_token):
            return
        if self._guessed.get(t.utterance_id, 0) >= MAX_GUESSES:
            return
        n = self._guessed.get(t.utterance_id, 0) + 1
        self._guessed.remember(t.utterance_id, n)
        campaign = self.memory.campaign
        npc = campaign.npc(npc_token) if campaign is not None else None
        if campaign is None or npc is None:
            return
        p = self.policy
        recalled = await self._memories(npc_token, t.text)
        used: list[str] = []
        system, messages = build_prompt(npc, campaign, self.memory, t.text,
                                        history=p.history_exchanges, context=p.context_exchanges,
                                        exclude=t.utterance_id, recalled=recalled, used=used,
                                        session=self.subjects.session)
        chain = self._llms.chain_for(self.subjects.tenant, campaign, npc, log_extra={
            "session": self.subjects.session, "turn": t.utterance_id})
        held = HeldSentence(self._writer(t, npc_token, f"{t.utterance_id}.guess{n}")) \
            if p.speculate_audio else None
        self._guesses[t.utterance_id] = Guess(
            words, npc_token, self._epoch, chain, system, messages, max_tokens=p.max_tokens,
            seed=seed_for(t.utterance_id), held=held)
        self._guesses[t.utterance_id].memories = tuple(used)
        while len(self._guesses) > MAX_OPEN_GUESSES:  # finals that never came
            await self._drop(next(iter(self._guesses)))
        log.debug("reply started on an interim transcript",
                  extra=self._log(turn=t.utterance_id, npc=npc_token))

    async def _memories(self, npc: str, text: str) -> Memories:
        """What ``npc`` remembers that bears on ``text`` (nothing without a recaller, or when
        recall is late or fails: see glyphoxa_npc_brain.recall)."""
        return await self._recall.get(npc, text) if self._recall is not None else ()

    async def _drop(self, turn_id: str) -> None:
        guess = self._guesses.pop(turn_id, None)
        if guess is None:
            return
        await guess.cancel()
        self._metrics.guesses.labels(result="discarded").inc()
        n = self._guessed.get(turn_id, 0)
        await self._publish_usage(f"{turn_id}:guess{n}", guess.calls)

    async def _adoptable(self, t: Transcript, npc: str | None) -> Guess | None:
        """The guess the final transcript confirms (same words, NPC and context), if any;
        any other guess for the line is dropped."""
        guess = self._guesses.get(t.utterance_id)
        if guess is None:
            return None
        if (npc is not None and guess.npc == npc and guess.epoch == self._epoch
                and guess.words == same_words(t.text)):
            del self._guesses[t.utterance_id]
            self._metrics.guesses.labels(result="adopted").inc()
            return guess
        await self._drop(t.utterance_id)
        return None

    # --- turns ---------------------------------------------------------------------------

    async def _take_turn(self, t: Transcript, seq: int, headers: Mapping[str, str]) -> None:
        taken_ns = self._clock()
        assert self._router is not None
        self._trace = trace = TurnTrace(self.subjects, t, headers, taken_ns)
        decision = self._router.route(t.text, t.speech_end_ns, self.memory.last_address)
        trace.routed(decision, self._clock())
        muted = decision.npc is not None and self.memory.is_muted(decision.npc)
        guess = await self._adoptable(t, None if (t.error or muted) else decision.npc)
        self._guessed.pop(t.utterance_id, None)
        self._metrics.routing.labels(kind=decision.kind.value).inc()
        latency = TurnLatency(
            speech_end_ns=t.speech_end_ns, vad_end_ns=t.vad_end_ns, stt_final_ns=t.stt_final_ns
        )
        if t.error:  # stt could not hear the line: the turn failed, it was not table talk
            failure = TurnFailure(stage=FailureStage.stt, provider=t.provider[:64] or None,
                                  error=t.error[:300])
            await self._end(t, None, TurnResult(Outcome.failed, f"stt: {t.error}",
                                                failure=failure), "", latency, decision)
            return
        if decision.npc is None:
            await self._end(t, None, TurnResult(Outcome.not_addressed, decision.reason), "",
                            latency, decision)
            return
        if self.memory.is_muted(decision.npc):
            await self._end(t, decision.npc, TurnResult(Outcome.muted, "NPC is muted"), "",
                            latency, decision)
            return
        self._active = _ActiveTurn(t.utterance_id, decision.npc, t.speech_end_ns, seq, TurnCancel())
        writer = self._writer(t, decision.npc)
        writer.trace = trace.headers
        if guess is not None:
            writer.claim = guess.claim
        calls: list[CallStats] = []
        llm_started_ns = self._clock()
        result = TurnResult(Outcome.failed, "")
        try:
            result = await self._answer(t, writer, self._active.cancel, calls, guess)
        except Exception as exc:  # the turn still ends with an event, whatever broke
            log.exception("turn failed", extra=self._log(turn=t.utterance_id))
            error = f"internal error: {type(exc).__name__}"
            result = TurnResult(Outcome.failed, error, failure=TurnFailure(
                stage=FailureStage.npc_brain, error=error, retryable=False))
        finally:
            self._active = None
            trace.answered(writer, llm_started_ns, self._clock(), result.llm_provider)
            if guess is not None and guess.held is not None:
                await guess.held.discard()  # unless the turn claimed it
        await self._publish_usage(t.utterance_id, calls)  # before the turn event ends the turn
        latency = latency.model_copy(
            update={
                "first_token_ns": writer.first_token_ns,
                "first_sentence_ns": writer.first_sentence_ns,
            }
        )
        self._observe(writer, taken_ns)
        result = replace(result, reason=result.reason or decision.reason)
        await self._end(t, decision.npc, result, writer.text, latency, decision)

    def _writer(self, t: Transcript, npc_token: str, turn_id: str | None = None) -> ReplyWriter:
        campaign = self.memory.campaign
        assert campaign is not None
        names = (
            *(name for n in campaign.npcs for name in n.names),
            *self.memory.speakers.values(),
            self.memory.speaker_name(t.speaker),
        )
        return ReplyWriter(
            self._sink,
            self.subjects,
            turn_id or t.utterance_id,
            npc_token,
            t.speech_end_ns,
            self._clock,
            self.policy.max_sentences,
            names,
            heard=t.text,
            first_clause=self.policy.first_clause,
        )

    async def _answer(
        self, t: Transcript, writer: ReplyWriter, cancel: TurnCancel, calls: list[CallStats],
        guess: Guess | None = None,
    ) -> TurnResult:
        campaign = self.memory.campaign
        assert campaign is not None
        npc = campaign.npc(writer.npc)
        assert npc is not None
        p = self.policy
        # a guess the final confirmed was prompted with the same words' memories already
        recalled = await self._memories(npc.token, t.text) if guess is None else ()
        used: list[str] = []
        system, messages = build_prompt(
            npc,
            campaign,
            self.memory,
            t.text,
            history=p.history_exchanges,
            context=p.context_exchanges,
            exclude=t.utterance_id,
            recalled=recalled,
            used=used,
            session=self.subjects.session,
        )
        chain = guess.chain if guess is not None else self._llms.chain_for(
            self.subjects.tenant, campaign, npc,
            log_extra={"session": self.subjects.session, "turn": t.utterance_id},
        )
        result = await stream_reply(
            guess.source() if guess is not None else chain,
            writer,
            system,
            messages,
            max_tokens=p.max_tokens,
            timeout_s=p.turn_timeout_s,
            cancel=cancel,
            retry_messages=[ChatMessage("user", t.text.strip())],
            calls=calls,
        )
        failure = result.failure
        if failure is not None and failure.provider is None:  # timed out or cancelled
            provider = chain.served_by or (chain.choices[0].provider if chain.choices else None)
            failure = failure.model_copy(update={"provider": provider})
        return replace(result, llm_provider=chain.served_by, failure=failure,
                       memories=guess.memories if guess is not None else tuple(used))

    async def _publish_usage(self, turn_id: str, calls: list[CallStats]) -> None:
        """Tokens in and out of every LLM call attempt of the turn (``llm:<turn>:<attempt>``),
        each under the provider that made it: a replica redoing the turn makes the same
        attempts and publishes the same keys (unless a breaker changed the chain meanwhile)."""
        for usage in usage_of(f"llm:{turn_id}", calls, self._stage):
            await publish_usage(self._sink, self.subjects, usage)

    def _observe(self, writer: ReplyWriter, taken_ns: int) -> None:
        if writer.first_token_ns:
            self._metrics.first_token.observe(max(writer.first_token_ns - taken_ns, 0) / 1e9)
        if writer.first_sentence_ns:
            self._metrics.first_sentence.observe(max(writer.first_sentence_ns - taken_ns, 0) / 1e9)

    async def _end(
        self, t: Transcript, npc: str | None, result: TurnResult, reply: str, latency: TurnLatency,
        decision: RoutingDecision,
    ) -> None:
        event = TurnEnded(
            turn_id=t.utterance_id,
            speaker=t.speaker,
            transcript=t.text,
            npc=npc,
            outcome=result.outcome,
            reason=result.reason[:500],
            reply_text=reply[:4000],
            latency=latency,
            llm_provider=result.llm_provider,
            routing=decision.explained,
            failure=result.failure,
            memories=result.memories[:20],
        )
        s = self.subjects
        await self._sink.publish(
            s.ctl("turn"), event.to_bytes(), f"ctl:{s.tenant}.{s.session}:turn:{t.utterance_id}"
        )
        if self._trace is not None:
            self._trace.ended(event, self._clock())
        self.memory.apply(event)
        self._epoch += 1
        self._metrics.turns.labels(outcome=result.outcome.value,
                                   reason=decision.explained.label).inc()
        log.info(
            "turn ended",
            extra=self._log(
                turn=t.utterance_id,
                npc=npc,
                outcome=result.outcome.value,
                reason=result.reason[:200],
                route=decision.explained.label,
                llm_provider=result.llm_provider,
                failed_stage=result.failure.stage.value if result.failure else None,
            ),
        )

    # --- timers, GM lines ---------------------------------------------------------------

    async def on_tick(self) -> None:
        """Speak GM lines once the control replay has had time to show they were spoken."""
        now = self._monotonic()
        while self._gm_lines and now - self._gm_lines[0][0] >= self.policy.npc_speak_grace_s:
            _, line = self._gm_lines.popleft()
            if self.memory.was_voiced(line.request_id):
                continue
            await self._speak_gm_line(line)

    async def _speak_gm_line(self, line: NpcSpeak) -> None:
        campaign = self.memory.campaign
        if campaign is None or campaign.npc(line.npc) is None:
            log.warning("npc.speak for an unknown NPC", extra=self._log(npc=line.npc))
            return
        splitter = SentenceSplitter()
        sentences = [*splitter.feed(line.text), splitter.flush()]
        writer = ReplyWriter(
            self._sink, self.subjects, line.request_id, line.npc, 0, self._clock, max_sentences=1000
        )
        writer.first_token_ns = self._clock()
        await writer.add(sentences, last=True)

    def tick_after_s(self) -> float | None:
        """GM lines wait ``npc_speak_grace_s`` (tenths of a second) before they are spoken."""
        return 0.05 if self._gm_lines else None

    def retain_from(self) -> int | None:
        return self._active.seq if self._active is not None else None

    async def close(self) -> None:
        """Stop the priming and every guess. When this serving of the session was given up
        nothing can be published (a guess's usage): each is stopped all the same, and the
        first refusal is raised at the end."""
        if self._prime_task is not None and not self._prime_task.done():
            self._prime_task.cancel()
            await asyncio.wait({self._prime_task})
        refused: PublishError | None = None
        for turn_id in list(self._guesses):
            try:
                await self._drop(turn_id)  # cancels the guess before it publishes
            except PublishError as exc:
                refused = refused or exc
        if refused is not None:
            raise refused


def _parse_transcript(msg: InputMessage) -> Transcript:
    try:
        speaker = parse_subject(msg.subject).leaf
    except InvalidToken as exc:
        raise MalformedEvent(str(exc)) from None
    transcript = parse_as(Transcript, msg.data)
    if transcript.speaker != speaker:
        raise MalformedEvent(
            f"speaker {transcript.speaker!r} does not match the subject's {speaker!r}"
        )
    return transcript
