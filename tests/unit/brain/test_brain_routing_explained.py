"""Every routing decision explains itself: which name matched, where, how, or why not."""

from __future__ import annotations

import pytest

from glyphoxa_campaign import Campaign
from glyphoxa_events.models import ROUTING_LABELS, NameMatch, RouteKind, RoutingExplained
from glyphoxa_npc_brain.routing import LastAddress, Router
from tests.unit.brain.brain_fakes import SECOND, campaign

pytestmark = pytest.mark.unit

ROUTER = Router(campaign())


def explain(text: str, last: str | None = None, at_s: float = 100.0, last_at_s: float = 95.0,
            router: Router = ROUTER) -> RoutingExplained:
    previous = LastAddress(last, int(last_at_s * SECOND)) if last else None
    explained = router.route(text, int(at_s * SECOND), previous).explained
    assert explained.label in ROUTING_LABELS
    return explained


def span(text: str, e: RoutingExplained) -> str:
    assert e.start is not None and e.end is not None
    return text[e.start : e.end]


def test_exact_name_at_the_start() -> None:
    text = "Hey Greta, how much for the longsword?"
    e = explain(text)
    assert (e.kind, e.npc, e.name, e.name_kind, e.match, e.score) == (
        RouteKind.name_start, "greta", "Greta", "name", NameMatch.exact, 100.0)
    assert (e.matched, e.word, e.start, e.end) == ("Greta", 1, 4, 9)
    assert e.why == "named at the start: 'Greta'" and e.label == "name_start_exact"
    assert e.mentioned is None and e.last_npc is None


def test_exact_name_at_the_end_keeps_the_speakers_spelling_and_offsets() -> None:
    text = "Isn't that right, CAPTAIN VOSS?"
    e = explain(text)
    assert (e.kind, e.npc, e.name, e.match) == (
        RouteKind.name_end, "captain-voss", "Captain Voss", NameMatch.exact)
    assert span(text, e) == e.matched == "CAPTAIN VOSS" and e.word == 3
    assert e.label == "name_end_exact"


def test_offsets_count_characters_of_the_original_line_not_its_lower_case() -> None:
    text = "İzmir wine, Ærwen? Thanks, Aldric."  # "İ".lower() is two characters long
    e = explain(text)
    assert e.kind == RouteKind.name_end and span(text, e) == "Aldric"


def test_an_alias_and_a_part_of_the_name_say_which_they_are() -> None:
    c = Campaign(name="c", npcs=[
        {"name": "Greta Ironhand", "aliases": ["the smith"], "persona": "x"},
        {"name": "Aldric", "persona": "y"},
    ])
    router = Router(c)
    alias = explain("Is your forge hot, smith?", router=router)
    assert (alias.npc, alias.name, alias.name_kind, alias.matched) == (
        "greta-ironhand", "smith", "part", "smith")
    whole = explain("The smith, is she in?", router=router)
    assert (whole.kind, whole.name, whole.name_kind, whole.matched) == (
        RouteKind.name_start, "the smith", "alias", "The smith")
    surname = explain("Ironhand, a word?", router=router)
    assert (surname.name, surname.name_kind) == ("Ironhand", "part")


def test_a_misheard_name_is_fuzzy_with_its_score() -> None:
    text = "Gretta, how much for the longsword?"
    e = explain(text)
    assert (e.npc, e.name, e.matched, e.match) == ("greta", "Greta", "Gretta", NameMatch.fuzzy)
    assert e.score is not None and 80 <= e.score < 100
    assert e.why == f"named at the start: 'Gretta' (fuzzy {e.score:.0f} for 'Greta')"
    assert e.label == "name_start_fuzzy"


def test_a_name_heard_by_its_sound_is_phonetic() -> None:
    e = explain("Open the gate, Foss!")
    assert (e.kind, e.npc, e.name, e.matched, e.match, e.score) == (
        RouteKind.name_end, "captain-voss", "Voss", "Foss", NameMatch.phonetic, 85.0)
    assert e.label == "name_end_phonetic"


def test_a_follow_up_says_to_whom_and_how_long_after() -> None:
    e = explain("And could you sharpen my axe?", last="aldric", at_s=100, last_at_s=75.5)
    assert (e.kind, e.npc, e.last_npc, e.since_last_ms, e.window_ms) == (
        RouteKind.followup, "aldric", "aldric", 24_500, 30_000)
    assert e.why == "follow-up to Aldric" and e.label == "followup"
    assert e.name is None and e.match is None


def test_too_late_for_a_follow_up_says_how_late() -> None:
    e = explain("And could you sharpen my axe?", last="aldric", at_s=100, last_at_s=60)
    assert (e.kind, e.npc, e.last_npc, e.since_last_ms) == (RouteKind.none, None, "aldric", 40_000)
    assert e.why == ("no NPC named, and Aldric was addressed 40.0 s before, past the 30 s "
                     "follow-up window")


def test_an_address_only_npc_is_not_followed_up_and_says_so() -> None:
    router = Router(campaign("Greta", "Aldric", address_only=("Aldric",)))
    e = explain("And breakfast?", last="aldric", router=router)
    assert (e.kind, e.npc) == (RouteKind.none, None)
    assert e.why == "no NPC named, and Aldric, addressed last, answers only when named"


def test_the_only_npc() -> None:
    e = explain("How much for the longsword?", router=Router(campaign("Greta")))
    assert (e.kind, e.npc, e.why, e.label) == (
        RouteKind.only_npc, "greta", "the only NPC present", "only_npc")
    solo = Router(campaign("Aldric", address_only=("Aldric",)))
    assert explain("A room please.", router=solo).why == (
        "no NPC named, and Aldric, the only NPC, answers only when named")


@pytest.mark.parametrize(("text", "mentioned", "matched", "why"), [
    ("Greta said the stranger had a limp.", "greta", "Greta",
     "talks about Greta, not to: 'Greta' is followed by 'said'"),
    ("We should ask Greta.", "greta", "Greta",
     "talks about Greta, not to: 'Greta' comes after 'ask'"),
    ("Greta's forge is on fire.", "greta", "Greta's",
     "talks about Greta, not to: \"Greta's\" is a possessive"),
    ("I think Aldric is lying to us.", "aldric", "Aldric",
     "talks about Aldric, not to: 'Aldric' is named in the middle of the line, neither at its "
     "start nor its end"),
])
def test_table_talk_names_the_mention_and_why_it_did_not_count(
        text: str, mentioned: str, matched: str, why: str) -> None:
    e = explain(text, last="greta")
    assert (e.kind, e.npc, e.mentioned, e.matched, e.why) == (
        RouteKind.table_talk, None, mentioned, matched, why)
    assert span(text, e) == matched and e.match == NameMatch.exact
    assert (e.last_npc, e.since_last_ms) == ("greta", 5_000)  # the follow-up it overrode
    assert e.label == "table_talk_mention"


def test_table_talk_without_a_name_gives_its_cue() -> None:
    e = explain("I roll for perception, that's a seventeen.", last="greta")
    assert (e.kind, e.npc, e.mentioned, e.cue, e.matched) == (
        RouteKind.table_talk, None, None, "mechanics", "roll")
    assert e.why == "mechanics: 'roll'" and e.label == "table_talk_cue"


def test_nobody_and_an_empty_line() -> None:
    e = explain("How much for the longsword?")
    assert (e.kind, e.why, e.last_npc) == (
        RouteKind.none, "no NPC named and no conversation going on", None)
    assert explain("  ...  ").why == "empty transcript"


def test_every_explanation_fits_the_turn_event() -> None:
    long_line = "Greta, " + "tell me more about the old mine and its ghosts, " * 80
    e = explain(long_line[:4000])
    RoutingExplained.model_validate(e.model_dump())  # within every field's bounds
    assert e.label == "name_start_exact"
