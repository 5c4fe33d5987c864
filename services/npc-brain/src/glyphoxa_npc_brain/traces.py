"""The spans of one turn in npc-brain (``glyphoxa_runtime.tracing``; nothing when it is off).

The turn span continues stt's final (its message's ``traceparent``) from the moment the
brain took the line to the turn event; its children are the routing decision, the LLM's
first token and the whole LLM stream. The reply chunks carry the turn span's context, so
tts's synthesis of each sentence joins the same trace.
"""

from __future__ import annotations

from collections.abc import Mapping

from glyphoxa_events.models import Transcript, TurnEnded
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_npc_brain.routing import RoutingDecision
from glyphoxa_npc_brain.turn import ReplyWriter
from glyphoxa_runtime import tracing


class TurnTrace:
    def __init__(self, subjects: SessionSubjects, t: Transcript,
                 parent: Mapping[str, str] | None, taken_ns: int):
        self._taken_ns = taken_ns
        self._who = {"tenant": subjects.tenant, "session": subjects.session,
                     "turn": t.utterance_id}
        self.span = tracing.start("npc-brain: turn", parent, taken_ns, speaker=t.speaker,
                                  **self._who)
        self.headers = tracing.context_headers(self.span)
        """What the turn's reply chunks carry."""

    def routed(self, decision: RoutingDecision, at_ns: int) -> None:
        if self.span is not None:
            tracing.record("npc-brain: routing", self.headers, self._taken_ns, at_ns,
                           kind=str(decision.kind), npc=decision.npc,
                           reason=decision.reason[:200], **self._who)

    def answered(self, writer: ReplyWriter, started_ns: int, ended_ns: int,
                 provider: str) -> None:
        """The LLM's part: from the call to its first token, and to its last."""
        if self.span is None:
            return
        if writer.first_token_ns:
            tracing.record("npc-brain: llm first token", self.headers, started_ns,
                           writer.first_token_ns, npc=writer.npc, provider=provider,
                           **self._who)
        tracing.record("npc-brain: llm stream", self.headers, started_ns, ended_ns,
                       npc=writer.npc, provider=provider, sentences=len(writer.sentences),
                       **self._who)
        tracing.event(self.span, "first sentence", writer.first_sentence_ns)

    def ended(self, event: TurnEnded, at_ns: int) -> None:
        tracing.end(self.span, at_ns, npc=event.npc, outcome=event.outcome.value,
                    reason=event.reason[:200])
