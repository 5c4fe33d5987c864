"""Who is addressed: names at the start/end, misrecognised names, table talk, follow-ups."""

from __future__ import annotations

import pytest

from glyphoxa_npc_brain.names import similarity
from glyphoxa_npc_brain.routing import LastAddress, Route, Router
from glyphoxa_npc_brain.tabletalk import table_talk_cue
from tests.unit.brain.brain_fakes import SECOND, campaign

pytestmark = pytest.mark.unit

ROUTER = Router(campaign())
T = 100 * SECOND


def route(
    text: str,
    last: str | None = None,
    at_s: float = 100.0,
    last_at_s: float = 95.0,
    router: Router = ROUTER,
):
    previous = LastAddress(last, int(last_at_s * SECOND)) if last else None
    return router.route(text, int(at_s * SECOND), previous)


@pytest.mark.parametrize(
    ("text", "npc"),
    [
        ("Greta, how much for the longsword?", "greta"),
        ("Hey Greta, got a minute?", "greta"),
        ("Okay so Greta, what about the axe?", "greta"),
        ("Hold on, Greta, one more thing.", "greta"),
        ("Captain Voss, we found tracks.", "captain-voss"),
        ("Voss, we found tracks.", "captain-voss"),
        ("Mirela what is this powder", "mirela"),  # STT dropped the comma
        ("Aldric!", "aldric"),
    ],
)
def test_name_at_start_addresses(text: str, npc: str) -> None:
    decision = route(text)
    assert (decision.kind, decision.npc) == (Route.name_start, npc)


@pytest.mark.parametrize(
    ("text", "npc"),
    [
        ("That's a steep price, don't you think, Greta?", "greta"),
        ("Thanks, Aldric.", "aldric"),
        ("Isn't that right, Captain Voss?", "captain-voss"),
        ("The guards took a bribe. Is that right? Captain Voss.", "captain-voss"),
        ("We could pay extra, Mirela, please?", "mirela"),
        ("Don't you think Greta?", "greta"),  # no comma, but not an object of the sentence
    ],
)
def test_name_at_end_addresses(text: str, npc: str) -> None:
    decision = route(text)
    assert (decision.kind, decision.npc) == (Route.name_end, npc)


@pytest.mark.parametrize(
    ("text", "npc"),
    [
        ("Gretta, how much for the longsword?", "greta"),
        ("Aldrich, we need two rooms.", "aldric"),
        ("Captain Boss, we found tracks.", "captain-voss"),
        ("Is it that right? Captain Moss.", "captain-voss"),
        ("Mirella, what is this?", "mirela"),
        ("What do you sell, Myrela?", "mirela"),
        ("Vos, open the gate!", "captain-voss"),
    ],
)
def test_misrecognised_names_still_address(text: str, npc: str) -> None:
    assert route(text).npc == npc


@pytest.mark.parametrize(
    "text",
    [
        "Great, let's buy it.",  # "great" sounds like Greta but is an ordinary word
        "Thanks, boss.",  # a bare "boss" is not Captain Voss
        "That sounds great.",
    ],
)
def test_ordinary_words_are_not_names(text: str) -> None:
    assert route(text).npc is None


@pytest.mark.parametrize(
    "text",
    [
        "Wait, did Greta say the stranger had a limp?",
        "I think Greta is lying to us.",
        "Greta said the stranger had a limp.",
        "Greta's forge is on fire.",
        "We should ask Greta.",
        "Did you see Aldric and Mirela talking?",
    ],
)
def test_third_person_mention_is_table_talk_even_during_a_conversation(text: str) -> None:
    decision = route(text, last="greta")
    assert (decision.kind, decision.npc) == (Route.table_talk, None)


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("I roll for perception, that's a seventeen.", "mechanics"),
        ("Does a natural twenty count as a crit?", "mechanics"),
        ("Hold on, I need to check my spell slots.", "aside"),
        ("Let's take a five minute break.", "out_of_game"),
        ("Sorry, I have to grab my charger.", "out_of_game"),
        ("Who wants pizza?", "out_of_game"),
        ("Okay, we walk into the forge.", "narration"),
        ("Cool, let's head over to the tavern.", "narration"),
        ("While the others keep her talking, I sneak around the back.", "narration"),
        ("Can someone pass me the dice?", "mechanics"),
        ("Does anyone have a pencil?", "asks_table"),
        ("Wait, what?", "aside"),
    ],
)
def test_table_talk_cues(text: str, cue: str) -> None:
    found = table_talk_cue(text)
    assert found is not None and found.kind == cue
    decision = route(text, last="greta")
    assert (decision.kind, decision.npc) == (Route.table_talk, None)


@pytest.mark.parametrize(
    "text",
    [
        "And could you sharpen my axe by tomorrow morning?",
        "Should we go tonight, or wait until dawn?",
        "Is the stew fresh, or is that yesterday's batch?",
        "Has the hooded stranger been back?",
        "Fine, we'll take it. Throw in a whetstone too.",
    ],
)
def test_follow_up_lines_are_not_table_talk(text: str) -> None:
    assert table_talk_cue(text) is None


def test_follow_up_goes_to_the_last_addressed_npc_within_the_window() -> None:
    decision = route("And could you sharpen my axe?", last="aldric", at_s=100, last_at_s=75)
    assert (decision.kind, decision.npc) == (Route.followup, "aldric")


def test_follow_up_window_is_measured_on_capture_time_not_the_wall_clock() -> None:
    late = route("And could you sharpen my axe?", last="aldric", at_s=100, last_at_s=69)
    assert (late.kind, late.npc) == (Route.none, None)
    # the same two utterances replayed a day later route the same way
    day = 86_400
    again = route(
        "And could you sharpen my axe?", last="aldric", at_s=100 + day, last_at_s=75 + day
    )
    assert again.npc == "aldric"


def test_follow_up_window_is_configurable() -> None:
    router = Router(campaign(), followup_window_s=5)
    assert route("And then?", last="greta", at_s=100, last_at_s=96, router=router).npc == "greta"
    assert route("And then?", last="greta", at_s=100, last_at_s=94, router=router).npc is None


def test_overlapping_speech_that_ended_earlier_still_follows_up() -> None:
    assert route("How long would that take?", last="greta", at_s=100, last_at_s=101).npc == "greta"


def test_the_only_npc_present_answers_unnamed_lines() -> None:
    solo = Router(campaign("Greta"))
    decision = route("How much for the longsword?", router=solo)
    assert (decision.kind, decision.npc) == (Route.only_npc, "greta")
    assert route("I roll for perception.", router=solo).npc is None


def test_no_name_no_conversation_and_several_npcs_is_nobody() -> None:
    decision = route("How much for the longsword?")
    assert (decision.kind, decision.npc) == (Route.none, None)
    assert route("   ").reason == "empty transcript"


def test_address_only_npc_answers_only_when_named() -> None:
    router = Router(campaign("Greta", "Aldric", address_only=("Aldric",)))
    assert route("Aldric, a room please.", router=router).npc == "aldric"
    assert route("And breakfast?", last="aldric", router=router).npc is None
    solo = Router(campaign("Aldric", address_only=("Aldric",)))
    assert route("A room please.", router=solo).npc is None
    assert route("Aldric, a room please.", router=solo).npc == "aldric"


def test_aliases_are_names_too() -> None:
    from glyphoxa_campaign import Campaign

    c = Campaign(
        name="c",
        npcs=[
            {"name": "Greta Ironhand", "aliases": ["the smith"], "persona": "x"},
            {"name": "Aldric", "persona": "y"},
        ],
    )
    router = Router(c)
    assert route("Ironhand, a word?", router=router).npc == "greta-ironhand"
    assert route("Greta, a word?", router=router).npc == "greta-ironhand"
    assert route("The smith, is she in?", router=router).npc == "greta-ironhand"
    assert route("Is your forge hot, smith?", router=router).npc == "greta-ironhand"


@pytest.mark.parametrize(
    ("heard", "name", "match"),
    [
        ("gretta", "greta", True),
        ("kreta", "greta", True),
        ("aldrick", "aldric", True),
        ("captain boss", "captain voss", True),
        ("foss", "voss", True),
        ("great", "greta", False),
        ("boss", "voss", False),
        ("aubrey", "aldric", False),
    ],
)
def test_similarity(heard: str, name: str, match: bool) -> None:
    assert (similarity(heard, name) >= 80) is match


@pytest.mark.parametrize("line", [
    "I keep an eye on the door while we wait.",
    "I stand guard by the window.",
    "I ready my crossbow and look around.",
])
def test_a_player_narrating_their_characters_action_is_table_talk(line: str) -> None:
    from glyphoxa_npc_brain.tabletalk import table_talk_cue

    cue = table_talk_cue(line)
    assert cue is not None and cue.kind == "narration"


@pytest.mark.parametrize("line", [
    "I keep thinking about what you said.",
    "I need two rooms for the night.",
    "I'd like to buy that sword.",
])
def test_first_person_requests_to_an_npc_are_not_table_talk(line: str) -> None:
    from glyphoxa_npc_brain.tabletalk import table_talk_cue

    assert table_talk_cue(line) is None
