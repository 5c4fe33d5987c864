"""The LLM prompt of a turn: the persona as the system prompt, the conversation with the
NPC, and the line to answer with what happened elsewhere in the session."""

from __future__ import annotations

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_npc_brain.llm.base import ChatMessage
from glyphoxa_npc_brain.memory import Exchange, SessionMemory

SPEAKING_RULES = (
    "Speak as {name} in the first person, directly to the player who talks to you. Reply with "
    "one to three short spoken sentences. Plain spoken words only: no lists, no markdown, no "
    "emojis, no stage directions. This is a fantasy role-playing game: stay in character and "
    "play along with what the players ask. Never say that you are an AI."
)


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


def build_prompt(
    npc: Npc,
    campaign: Campaign,
    memory: SessionMemory,
    text: str,
    *,
    history: int,
    context: int,
    exclude: str = "",
) -> tuple[str, list[ChatMessage]]:
    """The system prompt and the messages of one turn.

    Order matters for the prompt cache: the persona (never changes), then the conversation
    with this NPC (only grows), then the line to answer, prefaced by what happened with
    other NPCs since this one last spoke ("the campaign so far"). Only the last part is new
    on most turns, so only it has to be evaluated.

    The players' lines go in as said, without "Alex:" in front: small models copy such a
    prefix into their reply.
    """
    messages: list[ChatMessage] = []
    for exchange in memory.history(npc.token, history, exclude=exclude):
        if exchange.speaker is not None:
            messages.append(ChatMessage("user", exchange.player_text.strip()))
        if exchange.npc_text:
            messages.append(ChatMessage("assistant", exchange.npc_text))
    recent = memory.elsewhere(npc.token, context, exclude=exclude)
    line = text.strip()
    if recent:
        summary = " ".join(_summary(e, memory, campaign) for e in recent)
        line = f"(Meanwhile at the table: {summary})\n\n{line}"
    messages.append(ChatMessage("user", line))
    return persona_prompt(npc, campaign), messages


def _summary(exchange: Exchange, memory: SessionMemory, campaign: Campaign) -> str:
    npc = campaign.npc(exchange.npc)
    name = npc.name if npc else exchange.npc
    said = f'{name} said: "{exchange.npc_text}"' if exchange.npc_text else f"{name} did not answer."
    if exchange.speaker is None:
        return said
    return (
        f'{memory.speaker_name(exchange.speaker)} said to {name}: "{exchange.player_text}" {said}'
    )
