"""Helpers for the npc-brain unit tests: a collecting sink, a campaign, event builders."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from glyphoxa_bus.session import InputMessage
from glyphoxa_campaign import Campaign
from glyphoxa_events.models import ReplyChunk, SessionStarted, Transcript, TurnEnded, Usage
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_npc_brain.config import Settings, TurnPolicy
from glyphoxa_npc_brain.core import BrainHandler
from glyphoxa_npc_brain.llm.base import LLMProvider
from glyphoxa_npc_brain.llm.chain import LLMChoice
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.llm.pool import LLMPool, ProviderFactory
from glyphoxa_npc_brain.metrics import BrainMetrics

SUBJECTS = SessionSubjects("acme", "s1")
SECOND = 1_000_000_000


PERSONAS = {
    "Greta": "A gruff dwarven blacksmith in Oakridge. Blunt, proud of her craft, hates haggling.",
    "Aldric": "The cheerful innkeeper of the Prancing Stag. Loves gossip, knows everyone in town.",
    "Mirela": "A secretive herbalist. Speaks softly and never tells the whole truth.",
    "Captain Voss": "Captain of the city watch. Stern, tired, suspicious of adventurers.",
}


def campaign(
    *names: str,
    address_only: tuple[str, ...] = (),
    scenes: dict[str, str] | None = None,
    overhear: bool = False,
) -> Campaign:
    """The test campaign; ``scenes`` puts NPCs (by name) in a scene, ``overhear`` lets NPCs
    of one scene hear each other."""
    names = names or tuple(PERSONAS)
    scenes = scenes or {}
    return Campaign(
        name="The Silver Hunt",
        npcs=[
            {
                "name": n,
                "persona": PERSONAS.get(n, f"{n}, a townsperson of Oakridge."),
                "address_only": n in address_only,
                **({"scene": scenes[n]} if n in scenes else {}),
            }
            for n in names
        ],
        overhear=overhear,
    )


@dataclass
class Published:
    subject: str
    data: bytes
    msg_id: str
    headers: dict[str, str]


@dataclass
class CollectingSink:
    """Stands in for the bus publisher: keeps every publish, dedupes by msg id like JetStream."""

    published: list[Published] = field(default_factory=list)
    stored_ids: set[str] = field(default_factory=set)

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        self.published.append(Published(subject, data, msg_id, dict(headers or {})))
        self.stored_ids.add(msg_id)

    def chunks(self, turn_id: str | None = None) -> list[ReplyChunk]:
        out = [
            ReplyChunk.model_validate_json(p.data) for p in self.published if ".reply." in p.subject
        ]
        return [c for c in out if turn_id is None or c.turn_id == turn_id]

    def usage(self) -> list[tuple[Usage, str]]:
        return [
            (Usage.model_validate_json(p.data), p.msg_id)
            for p in self.published
            if ".usage." in p.subject
        ]

    def turns(self) -> list[TurnEnded]:
        return [
            TurnEnded.model_validate_json(p.data)
            for p in self.published
            if p.subject.endswith(".ctl.turn")
        ]

    def turn(self, turn_id: str) -> TurnEnded:
        found = [t for t in self.turns() if t.turn_id == turn_id]
        assert len(found) == 1, f"{len(found)} turn events for {turn_id}"
        return found[0]


class StepClock:
    """A wall clock that advances 1 ms per reading."""

    def __init__(self, start_ns: int = 1_700_000_000 * SECOND):
        self.now = start_ns

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


def brain_settings(**overrides: object) -> Settings:
    """npc-brain settings for tests: the fake provider unless told otherwise."""
    return Settings(**{"llm_provider": "fake", **overrides})  # type: ignore[arg-type]


def serving(**providers: LLMProvider) -> ProviderFactory:
    """A pool factory handing out ready instances by provider name (``fake=..., gemini=...``)."""

    async def build(choice: LLMChoice, key: str) -> LLMProvider:
        return providers[choice.provider]

    return build


def make_pool(
    llm: LLMProvider | None = None,
    metrics: BrainMetrics | None = None,
    settings: Settings | None = None,
    **providers: LLMProvider,
) -> LLMPool:
    """A pool whose configured provider (fake) is ``llm``; ``providers`` serve other names."""
    metrics = metrics or BrainMetrics(registry=CollectorRegistry())
    llm = llm or FakeLLM()
    for provider in (llm, *providers.values()):
        provider.on_usage = provider.on_usage or metrics.count_usage
    return LLMPool(settings or brain_settings(), build=serving(**{"fake": llm, **providers}),
                   metrics=metrics)


def make_handler(
    llm: LLMProvider | LLMPool | None = None,
    policy: TurnPolicy | None = None,
    sink: CollectingSink | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    metrics: BrainMetrics | None = None,
) -> tuple[BrainHandler, CollectingSink, BrainMetrics]:
    """A handler answering with ``llm`` (a provider standing in as the configured fake one,
    or a whole pool)."""
    sink = sink or CollectingSink()
    if isinstance(llm, LLMPool):
        pool = llm
        metrics = metrics or pool.metrics or BrainMetrics(registry=CollectorRegistry())
    else:
        metrics = metrics or BrainMetrics(registry=CollectorRegistry())
        pool = make_pool(llm, metrics)
    handler = BrainHandler(
        SUBJECTS, sink, pool, policy or TurnPolicy(), metrics, clock=StepClock(), monotonic=monotonic
    )
    return handler, sink, metrics


def started(c: Campaign | None = None) -> SessionStarted:
    return SessionStarted(campaign=c or campaign(), started_ns=1)


_seq = iter(range(1, 1_000_000))


def transcript_msg(
    text: str,
    speaker: str = "alex",
    utt: str | None = None,
    end_s: float = 10.0,
    final: bool = True,
    seq: int | None = None,
) -> InputMessage:
    utt = utt or f"{speaker}-{int(end_s * 1000)}"
    t = Transcript(
        utterance_id=utt,
        speaker=speaker,
        text=text,
        final=final,
        start_ns=int((end_s - 1) * SECOND),
        speech_end_ns=int(end_s * SECOND),
        vad_end_ns=int(end_s * SECOND) + 5,
        stt_final_ns=int(end_s * SECOND) + 7,
    )
    return InputMessage(SUBJECTS.stt(speaker), t.to_bytes(), {}, seq or next(_seq))


def raw_msg(data: bytes | str, speaker: str = "alex") -> InputMessage:
    body = data.encode() if isinstance(data, str) else data
    return InputMessage(SUBJECTS.stt(speaker), body, {}, next(_seq))


def metric(metrics: BrainMetrics, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
