"""What NPCs remember at a session's start fits in its session.started event
(glyphoxa_session_control.lifecycle.fit_seed)."""

from __future__ import annotations

import pytest

from glyphoxa_campaign import Campaign
from glyphoxa_events.models import MAX_EVENT_BYTES, SessionStarted, parse_control
from glyphoxa_session_control.lifecycle import fit_seed

pytestmark = pytest.mark.unit


def campaign(n: int) -> Campaign:
    return Campaign(name="Big Table", npcs=[
        {"name": f"Npc {i}", "persona": "A townsperson. " * 40} for i in range(n)])


def test_a_small_memory_goes_in_whole_and_unknown_npcs_are_left_out():
    started = fit_seed(SessionStarted(campaign=campaign(2), started_ns=1),
                       {"npc-0": "We swore to hunt the dragon.", "gone": "x" * 50},
                       {"npc-1": ["The bridge is out.", "  "], "gone": ["y"]})
    assert started.memory.recaps == {"npc-0": "We swore to hunt the dragon."}
    assert started.memory.facts == {"npc-1": ["The bridge is out."]}
    assert parse_control(started.to_bytes()) == started


def test_a_memory_too_big_for_one_event_loses_its_oldest_facts_then_recap_length():
    table = campaign(60)
    recaps = {f"npc-{i}": f"Recap {i}. " + "Things happened. " * 120 for i in range(60)}
    facts = {f"npc-{i}": [f"fact {i}.{k} " + "detail " * 30 for k in range(25)] for i in range(60)}
    started = fit_seed(SessionStarted(campaign=table, started_ns=1), recaps, facts)
    data = started.to_bytes()
    assert len(data) <= MAX_EVENT_BYTES - 2048
    assert parse_control(data) == started
    for npc, kept in started.memory.facts.items():  # the newest survive, in order
        assert kept == [f[:300] for f in facts[npc]][-len(kept):]
    assert started.memory.recaps  # recaps are cut shorter, not all dropped
    assert all(recaps[npc].startswith(text) for npc, text in started.memory.recaps.items())
