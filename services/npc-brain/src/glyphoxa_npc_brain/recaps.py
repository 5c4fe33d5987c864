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
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from glyphoxa_events.recaps import (
    MAX_RECAP_CHARS,
    RECAP_QUEUE,
    RECAP_SUBJECT,
    RecapReply,
    RecapRequest,
)
from glyphoxa_npc_brain.cleaning import clean_for_voice
from glyphoxa_npc_brain.llm.base import ChatMessage, ProviderError
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


def recap_prompt(req: RecapRequest) -> tuple[str, list[ChatMessage]]:
    npc = req.campaign.npc(req.npc)
    name = npc.name if npc is not None else req.npc
    system = RECAP_RULES.format(name=name, campaign=req.campaign.name)
    lines = "\n".join(req.exchanges)
    before = f"What you remembered before this session: {req.previous}\n\n" if req.previous else ""
    return system, [ChatMessage("user", f"{before}This session:\n{lines}\n\nYour memory of it:")]


class RecapMaker:
    def __init__(self, nc: Client, llms: LLMPool, metrics: BrainMetrics, *, quiet_s: float,
                 timeout_s: float, max_tokens: int, clock: Callable[[], float] = time.monotonic):
        self._nc, self._llms, self._metrics = nc, llms, metrics
        self._quiet_s, self._timeout_s, self._max_tokens = quiet_s, timeout_s, max_tokens
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
        npc = req.campaign.npc(req.npc)
        chain = self._llms.background_chain(
            req.tenant, req.campaign, npc, log_extra={"session": req.session, "recap": req.npc})
        if not chain.choices:
            return RecapReply(ok=False, retryable=False, error="no LLM provider is configured")
        try:
            local = (await self._llms.link(req.tenant, chain.choices[0])).provider.capabilities.local
        except ProviderError:
            local = False  # unavailable: the chain passes over it to its fallbacks
        if local and not self._quiet():
            return RecapReply(ok=True, busy=True)
        turn = self._llms.watch_turns() if local else asyncio.Event()
        cancel = asyncio.Event()
        yielded = asyncio.create_task(_relay(turn, cancel))
        system, messages = recap_prompt(req)
        parts: list[str] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                async for delta in chain.stream(system, messages, max_tokens=self._max_tokens,
                                                seed=0, cancel=cancel):
                    parts.append(delta)
        except TimeoutError:
            return RecapReply(ok=False, provider=chain.served_by,
                              error=f"the recap took over {self._timeout_s:.0f} s")
        except ProviderError as exc:
            if turn.is_set():
                return RecapReply(ok=True, busy=True)
            return RecapReply(ok=False, provider=exc.provider, retryable=exc.retryable,
                              error=str(exc)[:500])
        finally:
            yielded.cancel()
            self._llms.unwatch(turn)
        if turn.is_set():  # a turn came: what was written so far is thrown away
            log.info("recap gave way to a turn", extra={"tenant": req.tenant,
                                                        "session": req.session, "npc": req.npc})
            return RecapReply(ok=True, busy=True)
        names = npc.names if npc is not None else ()
        text = clean_for_voice("".join(parts), names)[:MAX_RECAP_CHARS]  # no markdown, no "Greta:"
        if not text:
            return RecapReply(ok=False, provider=chain.served_by, error="the LLM wrote nothing")
        log.info("recap made", extra={"tenant": req.tenant, "session": req.session,
                                      "npc": req.npc, "chars": len(text)})
        return RecapReply(ok=True, text=text, provider=chain.served_by)


async def _relay(turn: asyncio.Event, cancel: asyncio.Event) -> None:
    await turn.wait()
    cancel.set()
