"""What an NPC remembers, in its prompt alone (issue 16, docs/adr/0007): a fact told to one
NPC in session 1 is in that NPC's prompt in session 2, and in no prompt of an NPC that did
not witness it; the memory parts are bounded, and a campaign without memory prompts as
before."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from glyphoxa_campaign import Campaign
from glyphoxa_events.api import RecalledMemory
from glyphoxa_events.models import (
    NpcForgot,
    NpcSpeak,
    NpcTaught,
    Outcome,
    Played,
    SessionMemorySeed,
    SessionStarted,
    TurnEnded,
    TurnLatency,
    parse_control,
)
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.memory import SessionMemory
from glyphoxa_npc_brain.prompt import (
    MAX_FACTS,
    MAX_FACTS_CHARS,
    MAX_KNOWLEDGE_CHARS,
    MAX_LORE_CHARS,
    MAX_RECALLED,
    MAX_RECALLED_CHARS,
    MAX_RECAP_CHARS,
    REMEMBER,
    build_prompt,
    persona_prompt,
    recalled_texts,
    system_prompt,
)
from tests.unit.brain.brain_fakes import campaign, make_handler, make_pool, transcript_msg

pytestmark = pytest.mark.unit

FACT = "the silver key lies under the third millstone"
MARK = "third millstone"
NPCS = ("Greta", "Tobias", "Aldric", "Mirela")
SCENES = {"Greta": "smithy", "Tobias": "smithy", "Aldric": "inn"}  # Mirela is nowhere
ASK = "What do you know about the key?"
GRETA_BEFORE = (
    "You are Greta. A gruff dwarven blacksmith in Oakridge. Blunt, proud of her craft, hates "
    'haggling.\n\nYou are role-playing Greta in the tabletop campaign "The Silver Hunt". Speak '
    "as Greta in the first person, directly to the player who talks to you. Reply with one to "
    "three short spoken sentences. Plain spoken words only: no lists, no markdown, no emojis, "
    "no stage directions. This is a fantasy role-playing game: stay in character and play "
    "along with what the players ask. Never say that you are an AI."
)
"""Greta's system prompt as it was before NPCs had memory (issue 16)."""


def town(overhear: bool) -> Campaign:
    return campaign(*NPCS, scenes=SCENES, overhear=overhear)


def memory_for(c: Campaign, seed: SessionMemorySeed | None = None) -> SessionMemory:
    memory = SessionMemory()
    memory.apply(SessionStarted(campaign=c, started_ns=1, memory=seed or SessionMemorySeed()))
    return memory


def prompt_text(system: str, messages: list) -> str:
    return "\n".join([system, *(m.content for m in messages)])


# --- the memory property, as a table --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    how: str  # how the fact reaches the NPC it was told to
    told: str  # token of that NPC
    overhear: bool
    expect: frozenset[str]  # the NPCs whose prompt must hold it (no other may)


def case(how: str, told: str, overhear: bool, *expect: str) -> Case:
    return Case(how, told, overhear, frozenset(expect))


CASES = [
    # said to the NPC in session 1, recalled in session 2 (the store's rows carry witnesses)
    case("recalled exchange", "greta", False, "greta"),
    case("recalled exchange", "greta", True, "greta", "tobias"),
    case("recalled exchange", "aldric", True, "aldric"),  # alone in the inn
    case("recalled exchange", "mirela", True, "mirela"),  # in no scene: nobody overhears
    case("recalled fact", "greta", True, "greta"),  # a fact is witnessed by its NPC alone
    # taught by the GM before session 2 (session.started's seed) or during it (npc.taught)
    case("seed fact", "tobias", True, "tobias"),
    case("seed fact", "mirela", False, "mirela"),
    case("taught", "aldric", False, "aldric"),
    case("taught", "greta", True, "greta"),
    # the NPC's recap of session 1
    case("recap", "mirela", False, "mirela"),
    case("recap", "tobias", True, "tobias"),
    # said in this session: history of the NPC, "meanwhile" of those who overheard it
    case("heard", "greta", False, "greta"),
    case("heard", "greta", True, "greta", "tobias"),
    case("heard", "aldric", True, "aldric"),
    case("gm line", "tobias", True, "greta", "tobias"),
    case("gm line", "tobias", False, "tobias"),
]


def _session_two(c: Campaign, how: str, told: str) -> tuple[SessionMemory, list[tuple]]:
    """Session 2's memory and session 1's memory rows (witnesses, RecalledMemory)."""
    name = c.npc(told).name
    seed = SessionMemorySeed(
        facts={told: [FACT]} if how == "seed fact" else {},
        recaps={told: f"Alex told you that {FACT}."} if how == "recap" else {},
    )
    memory = memory_for(c, seed)
    rows: list[tuple] = [  # what every NPC remembers of session 1 besides: its own small talk
        ((n.token,), RecalledMemory(id=f"{i}", kind="exchange", session="s1", turn_id=f"sam-{i}",
                                    text=f'Sam said to {n.name}: "Nice weather." {n.name} '
                                         'answered: "Aye."'))
        for i, n in enumerate(c.npcs)
    ]
    if how == "recalled exchange":
        rows.append((c.witnesses(told), RecalledMemory(
            id="100", kind="exchange", session="s1", turn_id="alex-100",
            text=f'Alex said to {name}: "Remember: {FACT}." {name} answered: "I will."')))
    elif how == "recalled fact":
        rows.append(((told,), RecalledMemory(id="101", kind="fact", text=FACT)))
    elif how == "taught":
        memory.apply(NpcTaught(npc=told, fact_id="f-1", text=FACT))
    elif how == "heard":
        memory.apply(TurnEnded(turn_id="alex-7", speaker="alex", transcript=f"{name}, {FACT}.",
                               npc=told, outcome=Outcome.answered, reply_text="I will remember.",
                               latency=TurnLatency(speech_end_ns=7)))
    elif how == "gm line":
        memory.apply(NpcSpeak(npc=told, text=f"Listen: {FACT}.", request_id="gm-1"))
        memory.apply(Played(turn_id="gm-1", npc=told, text_heard=f"Listen: {FACT}.",
                            complete=True))
    return memory, rows


@pytest.mark.parametrize("c", CASES, ids=lambda c: f"{c.how}-{c.told}-overhear={c.overhear}")
def test_a_fact_is_in_the_prompt_of_the_npcs_that_witnessed_it_and_no_other(c: Case) -> None:
    world = town(c.overhear)
    memory, rows = _session_two(world, c.how, c.told)
    holding = set()
    for npc in world.npcs:
        recalled = [m for witnesses, m in rows if npc.token in witnesses]  # the store's rule
        system, messages = build_prompt(npc, world, memory, ASK, history=6, context=4,
                                        exclude="alex-9", recalled=recalled)
        text = prompt_text(system, messages)
        if MARK in text:
            holding.add(npc.token)
            assert text.count(MARK) == 1, (npc.token, text)
    assert holding == c.expect


def test_the_table_covers_every_way_in_and_both_overhear_settings() -> None:
    assert len(CASES) >= 10
    assert {c.how for c in CASES} == {"recalled exchange", "recalled fact", "seed fact",
                                      "taught", "recap", "heard", "gm line"}
    assert {c.overhear for c in CASES} == {True, False}


# --- the system prompt ----------------------------------------------------------------------


def test_without_memory_the_system_prompt_is_the_one_of_before() -> None:
    plain = campaign()
    greta = plain.npc("greta")
    memory = memory_for(plain)
    assert system_prompt(greta, plain, memory) == persona_prompt(greta, plain) == GRETA_BEFORE
    system, messages = build_prompt(greta, plain, memory, "  Greta, hi ", history=6, context=4)
    assert system == GRETA_BEFORE
    assert [(m.role, m.content) for m in messages] == [("user", "Greta, hi")]
    assert SessionStarted(campaign=plain, started_ns=1).to_bytes() == (
        SessionStarted(campaign=plain, started_ns=1, memory=SessionMemorySeed()).to_bytes())


def test_what_an_npc_knows_follows_its_persona_and_is_its_own() -> None:
    world = Campaign(
        name="The Silver Hunt", lore="Oakridge is a mining town. The mill burned last winter.",
        npcs=[{"name": "Greta", "persona": "A smith.", "knowledge": "You forged the key."},
              {"name": "Aldric", "persona": "An innkeeper.", "knowledge": "You owe Greta."}])
    seed = SessionMemorySeed(recaps={"greta": "Alex asked about the key."},
                             facts={"greta": ["the mayor is a liar"], "aldric": ["rooms cost 2"]})
    memory = memory_for(world, seed)
    memory.apply(NpcTaught(npc="greta", fact_id="f-9", text="the bridge is out"))
    greta, aldric = world.npc("greta"), world.npc("aldric")
    system = system_prompt(greta, world, memory)
    assert system == (
        persona_prompt(greta, world) + "\n\n"
        "Everyone here knows: Oakridge is a mining town. The mill burned last winter.\n"
        "You forged the key.\n"
        "Last time: Alex asked about the key.\n"
        "You were told: The mayor is a liar. The bridge is out."
    )
    assert build_prompt(greta, world, memory, "Hi", history=6, context=4)[0] == system
    other = system_prompt(aldric, world, memory)
    assert other.startswith(persona_prompt(aldric, world))
    assert "Oakridge is a mining town" in other and "You owe Greta." in other
    for greta_only in ("forged", "Alex asked", "mayor", "bridge"):
        assert greta_only not in other


def test_what_an_npc_knows_is_bounded() -> None:
    lore = " ".join(f"Fact {n} of the world is long enough to matter." for n in range(160))
    world = Campaign(name="c", lore=lore, npcs=[
        {"name": "Greta", "persona": "A smith.", "knowledge": "k" * 4000}])
    facts = [f"fact number {n} " + "x" * 270 for n in range(20)]
    memory = memory_for(world, SessionMemorySeed(recaps={"greta": "word " * 400},
                                                 facts={"greta": facts}))
    greta = world.npc("greta")
    known = system_prompt(greta, world, memory).removeprefix(persona_prompt(greta, world))
    lore_line, knowledge_line, recap_line, facts_line = known.strip().split("\n")
    lore_line = lore_line.removeprefix("Everyone here knows: ")
    assert len(lore_line) <= MAX_LORE_CHARS and lore_line.endswith("matter.")
    assert len(knowledge_line) <= MAX_KNOWLEDGE_CHARS and knowledge_line.endswith("...")
    assert len(recap_line.removeprefix("Last time: ")) <= MAX_RECAP_CHARS
    told = facts_line.removeprefix("You were told: ")
    assert len(told) <= MAX_FACTS_CHARS and 1 <= told.count("Fact number") <= MAX_FACTS
    assert "Fact number 19 " in told and "Fact number 0 " not in told  # the newest are kept
    assert len(known) < MAX_LORE_CHARS + MAX_KNOWLEDGE_CHARS + MAX_RECAP_CHARS + MAX_FACTS_CHARS + 80


def test_a_taught_fact_applied_twice_changes_nothing() -> None:
    world = campaign()
    memory = memory_for(world, SessionMemorySeed(facts={"greta": ["the key is old"]}))
    greta = world.npc("greta")
    taught = NpcTaught(npc="greta", fact_id="f-1", text="the bridge is out")
    memory.apply(taught)
    once = system_prompt(greta, world, memory)
    memory.apply(taught)  # a replica receives its control events again after a failover
    memory.apply(parse_control(taught.to_bytes()))
    memory.apply(NpcTaught(npc="greta", fact_id="f-2", text="the key is old"))  # seed's again
    assert system_prompt(greta, world, memory) == once
    assert memory.facts("greta") == ["the key is old", "the bridge is out"]
    assert once.count("The bridge is out.") == 1
    assert memory.facts("aldric") == []
    memory.apply(NpcTaught(npc="nobody", fact_id="f-3", text="a secret"))  # not in the campaign
    assert memory.facts("nobody") == [] and system_prompt(greta, world, memory) == once


def test_a_fact_the_gm_takes_back_leaves_the_prompt_seeded_or_taught() -> None:
    world = campaign()
    memory = memory_for(world, SessionMemorySeed(facts={"greta": ["the key is old"]}))
    greta = world.npc("greta")
    memory.apply(NpcTaught(npc="greta", fact_id="f-1", text="the bridge is out"))
    memory.apply(NpcForgot(npc="greta", fact_id="f-0", text="the key is old"))  # the seed's
    assert memory.facts("greta") == ["the bridge is out"]
    assert "key is old" not in system_prompt(greta, world, memory)
    # corrected: forgotten as it was, taught as it is now
    memory.apply(NpcForgot(npc="greta", fact_id="f-1", text="the bridge is out"))
    memory.apply(NpcTaught(npc="greta", fact_id="f-1", text="the bridge is mended"))
    assert memory.facts("greta") == ["the bridge is mended"]
    memory.apply(NpcTaught(npc="greta", fact_id="f-7", text="the key is old"))  # taught back
    assert memory.facts("greta") == ["the key is old", "the bridge is mended"]
    memory.apply(NpcForgot(npc="greta", fact_id="f-1", text="the bridge is mended"))
    memory.apply(NpcForgot(npc="greta", fact_id="f-1", text="the bridge is mended"))  # again
    assert memory.facts("greta") == ["the key is old"]


# --- recalled memories ----------------------------------------------------------------------


def _memory(n: int, text: str, turn_id: str | None = None, kind: str = "exchange") -> RecalledMemory:
    return RecalledMemory(id=str(n), kind=kind, text=text, session="s1", turn_id=turn_id)


def test_recalled_memories_go_into_the_last_message_ahead_of_the_line() -> None:
    world = campaign(scenes={"Greta": "smithy", "Aldric": "smithy"}, overhear=True)
    memory = memory_for(world)
    memory.apply(TurnEnded(turn_id="sam-1", speaker="sam", transcript="Aldric, ale!",
                           npc="aldric", outcome=Outcome.answered, reply_text="Coming.",
                           latency=TurnLatency(speech_end_ns=1)))
    recalled = [_memory(1, 'Alex said to Greta: "Find the dragon." Greta answered: "I will."'),
                _memory(2, "the key is under the mill", kind="fact")]
    system, messages = build_prompt(world.npc("greta"), world, memory, "Greta, what now?",
                                    history=6, context=4, recalled=recalled)
    assert system == persona_prompt(world.npc("greta"), world)  # the system prompt stays put
    assert messages[-1].content == (
        f'({REMEMBER}Alex said to Greta: "Find the dragon." Greta answered: "I will." '
        "The key is under the mill.)\n\n"
        '(Meanwhile at the table: Sam said to Aldric: "Aldric, ale!" Aldric said: "Coming.")'
        "\n\nGreta, what now?"
    )


def test_recalled_memories_are_bounded() -> None:
    short = [_memory(n, f"Memory {n}: " + "a" * 80) for n in range(5)]
    six = [*short, _memory(9, "Memory 9: " + "b" * 1500)]  # ~2000 characters in
    assert sum(len(m.text) for m in six) >= 1950
    kept = recalled_texts(six, set())
    assert len(kept) == MAX_RECALLED and "Memory 9" not in " ".join(kept)
    assert len(" ".join(kept)) <= MAX_RECALLED_CHARS

    long = [_memory(n, f"Memory {n}. " + "c " * 165) for n in range(6)]  # 6 x ~340 characters
    kept = recalled_texts(long, set())
    assert 2 <= len(kept) < MAX_RECALLED and len(" ".join(kept)) <= MAX_RECALLED_CHARS
    assert kept[0].startswith("Memory 0.") and kept[1].startswith("Memory 1.")  # best first

    world = campaign()
    _, messages = build_prompt(world.npc("greta"), world, memory_for(world), "Hi", history=6,
                               context=4, recalled=six)
    block = messages[-1].content.split("\n\n")[0]
    assert block.startswith(f"({REMEMBER}") and len(block) <= MAX_RECALLED_CHARS + len(REMEMBER) + 2


def test_recalled_memories_leave_out_what_the_prompt_already_holds() -> None:
    world = campaign()
    memory = memory_for(world, SessionMemorySeed(facts={"greta": ["the key is old"]}))
    memory.apply(TurnEnded(turn_id="alex-1", speaker="alex", transcript="Greta, the dragon?",
                           npc="greta", outcome=Outcome.answered, reply_text="Dead.",
                           latency=TurnLatency(speech_end_ns=1)))
    recalled = [
        _memory(1, 'Alex said to Greta: "Greta, the dragon?" Greta answered: "Dead."', "alex-1"),
        _memory(2, "Greta said the wolves came back.", "alex-2"),  # this very turn, replayed
        _memory(3, "The key is old", kind="fact"),  # in the system prompt already
        _memory(4, "Sam paid Greta ten gold.", "sam-0"),
        _memory(5, "Sam paid Greta ten gold.", "sam-00"),  # the same words twice
    ]
    _, messages = build_prompt(world.npc("greta"), world, memory, "Greta, and now?", history=6,
                               context=4, exclude="alex-2", recalled=recalled)
    assert messages[-1].content == f"({REMEMBER}Sam paid Greta ten gold.)\n\nGreta, and now?"
    assert str(messages).count("the dragon?") == 1


def test_a_memory_of_an_earlier_session_is_kept_whatever_its_turn_id() -> None:
    """Turn ids start again in every session: session 1's "alex-1" is not this session's."""
    world = campaign()
    memory = memory_for(world)
    memory.apply(TurnEnded(turn_id="alex-1", speaker="alex", transcript="Greta, the weather?",
                           npc="greta", outcome=Outcome.answered, reply_text="Rain.",
                           latency=TurnLatency(speech_end_ns=1)))
    earlier = _memory(1, 'Alex said to Greta: "The password is moonfish." Greta answered: "Aye."',
                      "alex-1").model_copy(update={"session": "s0"})
    this = _memory(2, 'Alex said to Greta: "Greta, the weather?" Greta answered: "Rain."',
                   "alex-1")  # session s1, in the history already
    _, messages = build_prompt(world.npc("greta"), world, memory, "Greta, the password?",
                               history=6, context=4, exclude="alex-2",
                               recalled=[earlier, this], session="s1")
    assert messages[-1].content.startswith(f'({REMEMBER}Alex said to Greta: "The password is')
    assert str(messages).count("the weather?") == 1
    assert recalled_texts([earlier, this], {"alex-1"}, session="s1") == [
        'Alex said to Greta: "The password is moonfish." Greta answered: "Aye."']


# --- priming --------------------------------------------------------------------------------


async def test_what_is_primed_is_the_system_prompt_a_turn_uses() -> None:
    class Caching(FakeLLM):
        capabilities = FakeLLM.capabilities.__class__(prompt_cache=True)

        def __init__(self) -> None:
            super().__init__("Aye.")
            self.primed: list[str] = []

        async def prime(self, system: str) -> None:
            self.primed.append(system)

    world = Campaign(name="c", lore="Oakridge mines silver.", npcs=[
        {"name": "Greta", "persona": "A smith.", "knowledge": "You forged the key."},
        {"name": "Aldric", "persona": "An innkeeper."}])
    seed = SessionMemorySeed(recaps={"greta": "Alex hunted wolves."},
                             facts={"aldric": ["rooms cost two silver"]})
    llm = Caching()
    pool = make_pool(llm)
    await pool.start()
    handler, _, _ = make_handler(pool)
    await handler.on_control(SessionStarted(campaign=world, started_ns=1, memory=seed))
    assert handler._prime_task is not None
    await asyncio.wait_for(handler._prime_task, 2)
    await handler.on_message(transcript_msg("Greta, the key?", utt="alex-1", end_s=10))
    await handler.on_message(transcript_msg("Aldric, a room?", utt="alex-2", end_s=20))
    used = [system for system, *_ in llm.calls]
    assert used == llm.primed
    assert "You forged the key." in used[0] and "Rooms cost two silver." in used[1]
    await handler.close()


async def test_a_fact_taught_mid_session_is_in_the_next_turn_of_that_npc_only() -> None:
    llm = FakeLLM("Aye.")
    handler, _, _ = make_handler(llm)
    world = campaign("Greta", "Aldric")
    await handler.on_control(SessionStarted(campaign=world, started_ns=1))
    await handler.on_message(transcript_msg("Greta, hello.", utt="alex-1", end_s=10))
    await handler.on_control(NpcTaught(npc="greta", fact_id="f-1", text=FACT))
    await handler.on_message(transcript_msg("Greta, the key?", utt="alex-2", end_s=20))
    await handler.on_message(transcript_msg("Aldric, the key?", utt="alex-3", end_s=30))
    before, after, aldric = (system for system, *_ in llm.calls)
    assert MARK not in before and after == f"{before}\n\nYou were told: {FACT[0].upper()}{FACT[1:]}."
    assert MARK not in aldric
    await handler.close()
