"""The prompt of a turn: a stable persona first, then history, then the line."""

from __future__ import annotations

import pytest

from glyphoxa_campaign import Campaign
from glyphoxa_events.models import Outcome, TurnEnded, TurnLatency
from glyphoxa_npc_brain.memory import SessionMemory
from glyphoxa_npc_brain.prompt import build_prompt, persona_prompt
from tests.unit.brain.brain_fakes import campaign, started

pytestmark = pytest.mark.unit

CAMPAIGN = campaign()


def memory_with(*exchanges: tuple[str, str, str, str], c: Campaign = CAMPAIGN) -> SessionMemory:
    memory = SessionMemory()
    memory.apply(started(c))
    for n, (npc, speaker, line, reply) in enumerate(exchanges):
        memory.apply(
            TurnEnded(
                turn_id=f"t-{n}",
                speaker=speaker,
                transcript=line,
                npc=npc,
                outcome=Outcome.answered,
                reply_text=reply,
                latency=TurnLatency(speech_end_ns=n),
            )
        )
    return memory


def test_persona_comes_first_and_is_not_repeated() -> None:
    second_person = Campaign(
        name="c", npcs=[{"name": "Greta", "persona": "You are Greta, a smith."}]
    )
    prompt = persona_prompt(second_person.npcs[0], second_person)
    assert prompt.startswith("You are Greta, a smith.") and prompt.count("You are Greta") == 1
    third_person = persona_prompt(CAMPAIGN.npc("greta"), CAMPAIGN)
    assert third_person.startswith("You are Greta. A gruff dwarven blacksmith")


def test_the_system_prompt_never_changes_so_its_evaluation_can_be_cached() -> None:
    # Greta overhears Aldric (one scene, overhear): what was said to him is new to her
    market = campaign(scenes={"Greta": "market", "Aldric": "market"}, overhear=True)
    greta = market.npc("greta")
    before, _ = build_prompt(greta, market, memory_with(c=market), "Hi", history=6, context=4)
    memory = memory_with(
        ("greta", "alex", "Greta, hi", "Hmph."), ("aldric", "sam", "Aldric, a room?", "Upstairs."),
        c=market,
    )
    after, messages = build_prompt(greta, market, memory, "Greta, again?", history=6, context=4)
    assert before == after == persona_prompt(greta, market)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "Greta, hi"),
        ("assistant", "Hmph."),
        (
            "user",
            '(Meanwhile at the table: Sam said to Aldric: "Aldric, a room?" Aldric said: '
            '"Upstairs.")\n\nGreta, again?',
        ),
    ]


def test_an_npc_hears_nothing_said_to_another_unless_it_overhears_it() -> None:
    """Until issue 16 every exchange with another NPC was in the prompt; now only those the
    NPC witnessed (``Campaign.witnesses``): without overhear, none."""
    memory = memory_with(
        ("greta", "alex", "Greta, hi", "Hmph."), ("aldric", "sam", "Aldric, a room?", "Upstairs.")
    )
    _, messages = build_prompt(
        CAMPAIGN.npc("greta"), CAMPAIGN, memory, "Greta, again?", history=6, context=4
    )
    assert messages[-1].content == "Greta, again?"
    assert "Aldric" not in str(messages)


def test_what_happened_elsewhere_is_only_what_is_new_to_the_npc() -> None:
    market = campaign(scenes={"Greta": "market", "Aldric": "market"}, overhear=True)
    memory = memory_with(
        ("aldric", "sam", "Aldric, a room?", "Upstairs."), ("greta", "alex", "Greta, hi", "Hmph."),
        c=market,
    )
    _, messages = build_prompt(market.npc("greta"), market, memory, "And?", history=6, context=4)
    assert messages[-1].content == "And?"


def test_history_window_moves_in_steps_so_the_prefix_stays_put() -> None:
    starts = []
    for total in range(1, 13):
        memory = memory_with(*[("greta", "alex", f"line {n}", f"reply {n}") for n in range(total)])
        window = memory.history("greta", 6)
        assert len(window) <= 6
        starts.append(window[0].player_text)
    assert starts == ["line 0"] * 6 + ["line 3"] * 3 + ["line 6"] * 3
