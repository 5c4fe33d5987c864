"""Recaps: what one NPC went through in a session, summed up by the campaign's LLM after the
session ended (docs/adr/0007). session-control asks on ``glxrecap.make``; every npc-brain
replica serves the queue group, one recap at a time.

Never on a turn's path: on the local model (whose cores the turns need) a replica answers
``busy`` while a turn started within ``BRAIN_RECAP_QUIET_S``, and gives up a recap the moment
a turn asks for its providers, answering ``busy``; session-control asks again later. A cloud
model takes nothing from the turns, so it just runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from glyphoxa_bus.usage import Sink, publish_usage
from glyphoxa_events.recaps import (
    MAX_RECAP_CHARS,
    RECAP_QUEUE,
    RECAP_SUBJECT,
    RecapReply,
    RecapRequest,
)
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_npc_brain.cleaning import clean_for_voice
from glyphoxa_npc_brain.llm.base import (
    CallStats,
    ChatMessage,
    LLMProvider,
    ProviderError,
    usage_of,
)
from glyphoxa_npc_brain.llm.pool import LLMPool
from glyphoxa_npc_brain.metrics import BrainMetrics

log = logging.getLogger("glyphoxa.npc_brain.recaps")

RECAP_RULES = (
    "You keep the memory of {name}, a character in the tabletop campaign \"{campaign}\". "
    "Below is what {name} heard and said in one game session. Write {name}'s memory of it "
    "in the first person, as {name} would remember it: who spoke with you, what they told "
    "you, what was promised or agreed, and anything you should remember next time. Keep "
    "names, numbers and places exactly as said. At most five short sentences, plain text."
)
ASK = "Your memory of this session:"
LEFT_OUT = "(earlier lines of the session left out)"


def recap_prompt(req: RecapRequest, fits: Callable[[str], bool] = lambda _: True
                 ) -> tuple[str, list[ChatMessage]]:
    """The rules and what the NPC went through as the system prompt (so the local model can
    evaluate it a few tokens at a time, giving way to turns, before it writes), the request as
    the one user message. The newest exchanges that ``fits`` the context are kept."""
    npc = req.campaign.npc(req.npc)
    name = npc.name if npc is not None else req.npc
    rules = RECAP_RULES.format(name=name, campaign=req.campaign.name)
    before = f"What you remembered before this session: {req.previous}\n\n" if req.previous else ""
    lines = list(req.exchanges)
    while True:
        shown = ([LEFT_OUT] if len(lines) < len(req.exchanges) else []) + lines
        system = f"{rules}\n\n{before}This session:\n" + "\n".join(shown)
        if len(lines) <= 1 or fits(system):
            return system, [ChatMessage("user", ASK)]
        lines = lines[max(1, len(lines) // 8):]  # the oldest eighth goes first


class RecapMaker:
    """``usage``: where the tokens of each recap call are published, as the session's usage
    (``recap:<npc>:<call>:<attempt>``, under ``stage``), made or not: the provider spent them."""

    def __init__(self, nc: Client, llms: LLMPool, metrics: BrainMetrics, *, quiet_s: float,
                 timeout_s: float, max_tokens: int, context_tokens: int = 2048,
                 clock: Callable[[], float] = time.monotonic, usage: Sink | None = None,
                 stage: str = "npc-brain"):
        self._nc, self._llms, self._metrics = nc, llms, metrics
        self._usage, self._stage = usage, stage
        self._quiet_s, self._timeout_s, self._max_tokens = quiet_s, timeout_s, max_tokens
        self._context_tokens = context_tokens
        self._clock = clock
        self._sub = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(RECAP_SUBJECT, queue=RECAP_QUEUE, cb=self._on_request)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Msg) -> None:
        try:
            req = RecapRequest.model_validate_json(msg.data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            reply = RecapReply(ok=False, retryable=False,
                               error=f"invalid recap request: {where}: {first['msg']}"[:500])
        else:
            reply = await self.make(req)
        self._metrics.recaps.labels(result="busy" if reply.busy else "ok" if reply.ok
                                    else "error").inc()
        if msg.reply:
            await msg.respond(reply.model_dump_json(exclude_none=True).encode())

    def _quiet(self) -> bool:
        last = self._llms.last_turn_at
        return last is None or self._clock() - last >= self._quiet_s

    async def make(self, req: RecapRequest) -> RecapReply:
        """The recap, from the first of the NPC's providers that makes one. Called directly,
        not through a turn's chain: a recap's failure (a long prompt, a slow first token) must
        never open the breaker the turns go by."""
        npc = req.campaign.npc(req.npc)
        chain = self._llms.background_chain(req.tenant, req.campaign, npc)
        failures: list[str] = []
        retryable = True
        for choice in chain.choices:
            try:
                provider = (await self._llms.link(req.tenant, choice)).provider
            except ProviderError as exc:
                failures.append(str(exc))
                continue
            reply = await self._make_with(provider, req)
            if reply.ok:
                return reply
            failures.append(reply.error or "failed")
            retryable = retryable and reply.retryable
        if not failures:
            return RecapReply(ok=False, retryable=False, error="no LLM provider is configured")
        return RecapReply(ok=False, retryable=retryable, error="; ".join(failures)[:500])

    async def _make_with(self, provider: LLMProvider, req: RecapRequest) -> RecapReply:
        local = provider.capabilities.local
        if local and not self._quiet():
            return RecapReply(ok=True, busy=True)
        budget = (self._context_tokens - self._max_tokens - 64) if local else 100_000

        def fits(system: str) -> bool:
            return provider.count_tokens(system) <= budget

        system, messages = recap_prompt(req, fits)
        turn = self._llms.watch_turns() if local else asyncio.Event()
        try:
            if local and provider.capabilities.prompt_cache:
                await provider.prime(system)  # a few tokens at a time, giving way to turns
                if turn.is_set():
                    return self._gave_way(req)
            cancel = asyncio.Event()
            yielded = asyncio.create_task(_relay(turn, cancel))
            parts: list[str] = []
            calls: list[CallStats] = []
            try:
                async for delta in provider.stream(
                        system, messages, max_tokens=self._max_tokens, seed=0, cancel=cancel,
                        timeouts=(self._timeout_s, self._timeout_s), calls=calls):
                    parts.append(delta)
            except ProviderError as exc:
                if turn.is_set():
                    return self._gave_way(req)
                return RecapReply(ok=False, provider=provider.name, retryable=exc.retryable,
                                  error=str(exc)[:500])
            finally:
                yielded.cancel()
                await self._publish_usage(req, calls)
        finally:
            self._llms.unwatch(turn)
        if turn.is_set():  # a turn came: what was written so far is thrown away
            return self._gave_way(req)
        npc = req.campaign.npc(req.npc)
        names = npc.names if npc is not None else ()
        text = clean_for_voice("".join(parts), names)[:MAX_RECAP_CHARS]  # no markdown, no "Greta:"
        if not text:
            return RecapReply(ok=False, provider=provider.name, error="the LLM wrote nothing")
        log.info("recap made", extra={"tenant": req.tenant, "session": req.session,
                                      "npc": req.npc, "chars": len(text)})
        return RecapReply(ok=True, text=text, provider=provider.name)

    async def _publish_usage(self, req: RecapRequest, calls: list[CallStats]) -> None:
        if self._usage is None or not calls:
            return
        subjects, call = SessionSubjects(req.tenant, req.session), uuid.uuid4().hex[:12]
        try:
            for usage in usage_of(f"recap:{req.npc}:{call}", calls, self._stage):
                await publish_usage(self._usage, subjects, usage)
        except Exception as exc:  # noqa: BLE001 - the recap stands; the count is what is lost
            log.error("the usage of a recap could not be published: %s", exc,
                      extra={"tenant": req.tenant, "session": req.session, "npc": req.npc,
                             "key": f"recap:{req.npc}:{call}"})

    @staticmethod
    def _gave_way(req: RecapRequest) -> RecapReply:
        log.info("recap gave way to a turn", extra={"tenant": req.tenant, "session": req.session,
                                                    "npc": req.npc})
        return RecapReply(ok=True, busy=True)


async def _relay(turn: asyncio.Event, cancel: asyncio.Event) -> None:
    await turn.wait()
    cancel.set()
