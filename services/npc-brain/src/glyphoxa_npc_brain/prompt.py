"""The LLM prompt of a turn: the persona and what the NPC knows as the system prompt, the
conversation with the NPC, and the line to answer with what the NPC remembers and what it
witnessed elsewhere in the session."""

from __future__ import annotations

import re
from collections.abc import Sequence

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events.api import RecalledMemory
from glyphoxa_npc_brain.llm.base import ChatMessage
from glyphoxa_npc_brain.memory import Exchange, SessionMemory

SPEAKING_RULES = (
    "Speak as {name} in the first person, directly to the player who talks to you. Reply with "
    "one to three short spoken sentences. Plain spoken words only: no lists, no markdown, no "
    "emojis, no stage directions. This is a fantasy role-playing game: stay in character and "
    "play along with what the players ask. Never say that you are an AI."
)

# How much of what an NPC knows goes into a prompt (characters; the local model has 2048
# tokens for all of it, the conversation and the reply). Longer parts are cut at a sentence.
MAX_LORE_CHARS = 600
MAX_KNOWLEDGE_CHARS = 600
MAX_RECAP_CHARS = 600
MAX_FACTS = 6
"""The newest taught facts (a later fact is often the GM's correction of an earlier one)."""
MAX_FACTS_CHARS = 600
MAX_RECALLED = 5
"""Recalled memories in one turn's prompt at most, best first (docs/adr/0007)."""
MAX_RECALLED_CHARS = 600
"""Characters of recalled memories in one turn's prompt at most."""
MAX_RECALLED_MEMORY_CHARS = 300
"""Characters of one recalled memory at most (the best one does not crowd out the rest)."""
REMEMBER = "You remember this, use it if it helps, in your own words: "
"""Ahead of the recalled memories, as prose (never a list: a small model reads a list out).
Tried on the bundled 1.5B model with four memories: it answered from each one it was asked
about, in a sentence of its own rather than the memory's words more often than after a
bare "You remember:"."""
MIN_CLIPPED_CHARS = 80
"""A memory is cut to fit only if this much of it fits; otherwise it is left out."""


def persona_prompt(npc: Npc, campaign: Campaign) -> str:
    """The system prompt's stable part: the same for every turn of this NPC.

    Small local models stay in character best with a short, direct prompt: who they are,
    then how to speak (tried on the bundled 0.5B model: longer framing made it narrate
    in the third person or answer for the player).
    """
    persona = npc.persona.strip()
    if not persona.lower().startswith(("you are", "you're")):
        persona = f"You are {npc.name}. {persona}"
    return (
        f"{persona}\n\n"
        f'You are role-playing {npc.name} in the tabletop campaign "{campaign.name}". '
        + SPEAKING_RULES.format(name=npc.name)
    )


def system_prompt(npc: Npc, campaign: Campaign, memory: SessionMemory) -> str:
    """The persona, then what the NPC knows: the campaign's lore, its own knowledge, its
    recap of earlier sessions and the facts the GM taught it, each bounded, empty parts
    left out (without any, the persona prompt alone). The same for every turn of a session
    until the GM teaches the NPC a fact (which comes last, so only the end changes); what
    npc-brain primes when a session starts."""
    known = known_section(npc, campaign, memory)
    persona = persona_prompt(npc, campaign)
    return f"{persona}\n\n{known}" if known else persona


def known_section(npc: Npc, campaign: Campaign, memory: SessionMemory) -> str:
    """What the NPC knows, a line per part, or "" when it knows nothing beyond its persona.

    Plain lines, no heading: tried on the bundled 1.5B model, a "What you know:" heading
    above them made it narrate about "the blacksmith" in the third person once in five
    answers; without it, none did, and each of the five parts was used when asked about.
    """
    lore = _clip(campaign.lore, MAX_LORE_CHARS)
    recap = _clip(memory.recap(npc.token), MAX_RECAP_CHARS)
    facts = _newest(memory.facts(npc.token), MAX_FACTS, MAX_FACTS_CHARS)
    lines = [
        f"Everyone here knows: {lore}" if lore else "",
        _clip(npc.knowledge, MAX_KNOWLEDGE_CHARS),
        f"Last time: {recap}" if recap else "",
        f"You were told: {' '.join(facts)}" if facts else "",
    ]
    return "\n".join(line for line in lines if line)


def build_prompt(
    npc: Npc,
    campaign: Campaign,
    memory: SessionMemory,
    text: str,
    *,
    history: int,
    context: int,
    exclude: str = "",
    recalled: Sequence[RecalledMemory] = (),
    used: list[str] | None = None,
    session: str | None = None,
) -> tuple[str, list[ChatMessage]]:
    """The system prompt and the messages of one turn; the ids of the ``recalled`` memories
    that went into it are appended to ``used``. ``session`` is the session the turn is in:
    turn ids start again in every session, so a recalled exchange is left out as "already in
    the prompt" only when it comes from this session.

    Order matters for the prompt cache: the system prompt (persona and what the NPC knows:
    the same all session), then the conversation with this NPC (only grows), then the line
    to answer, prefaced by what the NPC remembers of it from earlier (``recalled``, best
    first: at most ``MAX_RECALLED`` and ``MAX_RECALLED_CHARS``, leaving out what the prompt
    already holds) and by what it witnessed with other NPCs since it last spoke. Only the
    last part is new on most turns, so only it has to be evaluated.

    The players' lines go in as said, without "Alex:" in front: small models copy such a
    prefix into their reply.
    """
    messages: list[ChatMessage] = []
    shown = memory.history(npc.token, history, exclude=exclude)
    for exchange in shown:
        if exchange.speaker is not None:
            messages.append(ChatMessage("user", exchange.player_text.strip()))
        if exchange.npc_text:
            messages.append(ChatMessage("assistant", exchange.npc_text))
    recent = memory.witnessed(npc.token, context, exclude=exclude)
    in_prompt = {exclude, *(e.turn_id for e in shown), *(e.turn_id for e in recent)}
    picked = _recalled(recalled, in_prompt, known=memory.facts(npc.token), session=session)
    remembered = [text for _, text in picked]
    if used is not None:
        used.extend(m.id for m, _ in picked)
    parts: list[str] = []
    if remembered:
        parts.append(f"({REMEMBER}{' '.join(remembered)})")
    if recent:
        summary = " ".join(_summary(e, memory, campaign) for e in recent)
        parts.append(f"(Meanwhile at the table: {summary})")
    parts.append(text.strip())
    messages.append(ChatMessage("user", "\n\n".join(parts)))
    return system_prompt(npc, campaign, memory), messages


def recalled_texts(
    recalled: Sequence[RecalledMemory], in_prompt: set[str], known: Sequence[str] = (),
    session: str | None = None,
) -> list[str]:
    """The memories that go into a turn's prompt, best first, as sentences: none whose turn
    the prompt already holds (``in_prompt``), no fact the system prompt already has
    (``known``), no text twice; at most ``MAX_RECALLED`` of them, each cut to
    ``MAX_RECALLED_MEMORY_CHARS`` and all together to ``MAX_RECALLED_CHARS`` (a memory that
    does not fit is cut at a sentence if ``MIN_CLIPPED_CHARS`` of it fit, else left out).
    ``in_prompt`` holds turn ids of ``session`` (all sessions' when it is None)."""
    return [text for _, text in _recalled(recalled, in_prompt, known, session)]


def _recalled(
    recalled: Sequence[RecalledMemory], in_prompt: set[str], known: Sequence[str] = (),
    session: str | None = None,
) -> list[tuple[RecalledMemory, str]]:
    seen = {_sentence(fact) for fact in known}
    picked: list[tuple[RecalledMemory, str]] = []
    used = 0
    for memory in recalled:
        if len(picked) >= MAX_RECALLED:
            break
        if (memory.turn_id is not None and memory.turn_id in in_prompt
                and (session is None or memory.session == session)):
            continue
        text = _sentence(memory.text)
        if not text or text in seen:
            continue
        seen.add(text)
        room = min(MAX_RECALLED_CHARS - used - (1 if picked else 0), MAX_RECALLED_MEMORY_CHARS)
        if len(text) > room:
            if room < MIN_CLIPPED_CHARS:
                continue
            text = _clip(text, room)
        picked.append((memory, text))
        used += len(text) + (1 if len(picked) > 1 else 0)
    return picked


def _newest(facts: Sequence[str], count: int, chars: int) -> list[str]:
    """The newest facts that fit ``count`` and ``chars`` (joined by spaces), oldest first."""
    kept: list[str] = []
    used = 0
    for fact in reversed(facts):
        sentence = _sentence(fact)
        if len(kept) >= count or used + len(sentence) + len(kept) > chars:
            break
        kept.append(sentence)
        used += len(sentence)
    return kept[::-1]


def _sentence(text: str) -> str:
    """``text`` on one line, beginning with a capital and ending like a sentence."""
    text = " ".join(text.split())
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?\"')" else f"{text}."


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to at most ``limit`` characters: after its last whole
    sentence that fits, else after a word, with "..."."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    end = max((m.end() for m in re.finditer(r"[.!?](?=\s)", head)), default=0)
    if end >= limit // 2:
        return head[:end]
    cut = text[: limit - 3]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "..."


def _summary(exchange: Exchange, memory: SessionMemory, campaign: Campaign) -> str:
    npc = campaign.npc(exchange.npc)
    name = npc.name if npc else exchange.npc
    said = f'{name} said: "{exchange.npc_text}"' if exchange.npc_text else f"{name} did not answer."
    if exchange.speaker is None:
        return said
    return (
        f'{memory.speaker_name(exchange.speaker)} said to {name}: "{exchange.player_text}" {said}'
    )
