"""Prometheus metrics of npc-brain (``glyphoxa_npc_brain_*``; labels are bounded)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from glyphoxa_events.models import ROUTING_LABELS, Outcome
from glyphoxa_npc_brain.llm.base import CallStats
from glyphoxa_npc_brain.routing import Route

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)


class BrainMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        self.turns = Counter(
            "glyphoxa_npc_brain_turns_total",
            "turns by outcome (every utterance is one turn) and by reason: how it was routed, "
            "the route kind with how a name matched (name_start_exact, name_end_fuzzy, "
            "name_start_phonetic, ...), followup, only_npc, table_talk_mention, table_talk_cue "
            "or none",
            ["outcome", "reason"],
            registry=registry,
        )
        self.routing = Counter(
            "glyphoxa_npc_brain_routing_decisions_total",
            "who-is-addressed decisions by kind",
            ["kind"],
            registry=registry,
        )
        self.first_token = Histogram(
            "glyphoxa_npc_brain_first_token_seconds",
            "from taking the turn (final transcript in hand) to the first LLM token",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_sentence = Histogram(
            "glyphoxa_npc_brain_first_sentence_seconds",
            "from taking the turn to publishing the first reply sentence",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.llm_tokens = Counter(
            "glyphoxa_npc_brain_llm_tokens_total",
            "LLM tokens: in = prompt, cached = prompt tokens reused from the cache, out = reply",
            ["provider", "direction"],
            registry=registry,
        )
        self.recaps = Counter(
            "glyphoxa_npc_brain_recaps_total",
            "recap requests served, by result: ok, busy (a turn came first; asked again "
            "later), error",
            ["result"],
            registry=registry,
        )
        self.recall = Counter(
            "glyphoxa_npc_brain_recall_total",
            "memory recalls of addressed turns, by result: ok, empty (nothing remembered), "
            "late (past BRAIN_RECALL_TIMEOUT_MS: the turn went on without), error, off",
            ["result"],
            registry=registry,
        )
        self.recall_seconds = Histogram(
            "glyphoxa_npc_brain_recall_seconds",
            "from asking session-control for an NPC's memories to having them",
            buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.15, 0.3, 1.0),
            registry=registry,
        )
        self.llm_breakers = Gauge(
            "glyphoxa_npc_brain_llm_breakers",
            "LLM provider instances (one per provider, model, temperature and key) by the state "
            "of their circuit breaker: closed, open (skipped by turns), half_open (one trial)",
            ["provider", "state"],
            registry=registry,
        )
        self.llm_fallbacks = Counter(
            "glyphoxa_npc_brain_llm_fallbacks_total",
            "times a turn passed over an LLM provider for the next one in its chain, by why: "
            "error (before it spoke), breaker_open, unavailable (no key, no model)",
            ["provider", "reason"],
            registry=registry,
        )
        self.guesses = Counter(
            "glyphoxa_npc_brain_reply_guesses_total",
            "replies started on an interim transcript (BRAIN_SPECULATE), by result: adopted "
            "(the final said the same), discarded",
            ["result"],
            registry=registry,
        )
        for outcome in Outcome:
            for reason in ROUTING_LABELS:
                self.turns.labels(outcome=outcome.value, reason=reason)
        for kind in Route:
            self.routing.labels(kind=kind.value)

    def count_usage(self, provider: str, stats: CallStats) -> None:
        self.llm_tokens.labels(provider=provider, direction="in").inc(stats.prompt_tokens)
        self.llm_tokens.labels(provider=provider, direction="cached").inc(
            stats.cached_prompt_tokens
        )
        self.llm_tokens.labels(provider=provider, direction="out").inc(stats.completion_tokens)
