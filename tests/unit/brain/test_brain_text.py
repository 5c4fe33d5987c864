"""Cutting streamed replies into sentences and cleaning them for a voice."""

from __future__ import annotations

import pytest

from glyphoxa_npc_brain.cleaning import clean_for_voice
from glyphoxa_npc_brain.sentences import SentenceSplitter

pytestmark = pytest.mark.unit


def split_stream(text: str, piece: int = 3, first_clause: bool = False) -> list[str]:
    """Feed ``text`` in small pieces, like LLM tokens, then flush."""
    splitter = SentenceSplitter(first_clause=first_clause)
    out: list[str] = []
    for i in range(0, len(text), piece):
        out += splitter.feed(text[i : i + piece])
    rest = splitter.flush()
    return out + ([rest] if rest else [])


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_sentences_are_cut_at_end_marks_whatever_the_token_size(piece: int) -> None:
    text = "Aye. Fifteen gold! Is that too much? Take it or leave it"
    assert split_stream(text, piece) == [
        "Aye.",
        "Fifteen gold!",
        "Is that too much?",
        "Take it or leave it",
    ]


def test_a_sentence_is_handed_on_as_soon_as_the_next_one_begins() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Come back at dawn.") == []
    assert splitter.feed(" I") == ["Come back at dawn."]
    assert splitter.flush() == "I"


def test_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "Ask Mr. Smith at St. Olav's. J. R. Tolkien was here, e.g. last week. Dr. Who? No."
    assert split_stream(text) == [
        "Ask Mr. Smith at St. Olav's.",
        "J. R. Tolkien was here, e.g. last week.",
        "Dr. Who?",
        "No.",
    ]


def test_numbers_do_not_end_a_sentence() -> None:
    assert split_stream("That is 3.5 gold. Cheap.") == ["That is 3.5 gold.", "Cheap."]


def test_ellipsis_ends_a_sentence_only_before_a_new_one() -> None:
    assert split_stream("Well... I suppose. Hmm... maybe not.") == [
        "Well...",
        "I suppose.",
        "Hmm... maybe not.",
    ]
    assert split_stream("Wait\u2026 No!") == ["Wait\u2026", "No!"]


def test_ellipsis_waits_for_the_next_word() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Well... ") == []
    assert splitter.feed("i") == []
    assert splitter.feed(" see. ") == ["Well... i see."]


def test_runs_of_marks_and_closing_quotes_stay_with_their_sentence() -> None:
    assert split_stream('You what?! "Get out." Now!') == ["You what?!", '"Get out."', "Now!"]


def test_stage_directions_are_never_cut_in_half() -> None:
    text = "*She sighs. Then smiles.* Aye. (Laughs. Loudly.) Fine."
    assert split_stream(text) == ["*She sighs. Then smiles.* Aye.", "(Laughs. Loudly.) Fine."]


def test_line_breaks_end_sentences_and_long_runs_are_cut_at_a_comma() -> None:
    assert split_stream("Hello there\nWelcome") == ["Hello there", "Welcome"]
    long = "well " * 40 + ", and then " + "more " * 30
    parts = split_stream(long)
    assert len(parts) >= 2 and all(len(p) <= 240 for p in parts)


def test_flush_returns_the_unfinished_remainder() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Aye. Come back at") == ["Aye."]
    assert splitter.flush() == "Come back at"
    assert splitter.flush() == ""


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("Greta: Aye, that I can.", "Aye, that I can."),
        ("**Greta:** Aye.", "Aye."),
        ("Assistant: Hello there.", "Hello there."),
        ("*wipes her hands on her apron* Fifteen gold.", "Fifteen gold."),
        ("Fifteen gold. *grins*", "Fifteen gold."),
        ("(laughs) Fine, fine.", "Fine, fine."),
        ("[sighs] Very well.", "Very well."),
        ("It is **very** sharp.", "It is very sharp."),
        ("It is _very_ sharp.", "It is very sharp."),
        ("# Price\n- Fifteen gold.", "Price Fifteen gold."),
        ("1. Fifteen gold.", "Fifteen gold."),
        ("Fine work \U0001f528\U0001f525!", "Fine work!"),
        ("Aye \u2764\ufe0f.", "Aye."),
        ('"Come back at dawn."', "Come back at dawn."),
        ("See [the notice](http://x.example) , friend.", "See the notice, friend."),
        ("Use `steel`.", "Use steel."),
        ("*nods*", ""),
        ("\U0001f44d", ""),
        ("Aye, *unfinished action", "Aye,"),
    ],
)
def test_clean_for_voice(raw: str, spoken: str) -> None:
    assert clean_for_voice(raw, ["Greta"]) == spoken


def test_only_known_names_are_taken_for_a_speaker_prefix() -> None:
    assert clean_for_voice("Alex: the price is fair.", ["Greta", "Alex"]) == "the price is fair."
    assert clean_for_voice("Note: the price is fair.", ["Greta"]) == "Note: the price is fair."


def test_a_sentence_that_parrots_the_player_is_recognised() -> None:
    from glyphoxa_npc_brain.turn import parrots

    line = "Tobias, two ales and a room for the night, please."
    assert parrots("Two ales and a room for the night, please!", line)
    assert parrots("Tobias, two ales and a room for the night, please.", line)
    assert not parrots("Coming right up, and the room is yours for five silver.", line)
    assert not parrots("Anything.", "")


@pytest.mark.parametrize("piece", [1, 3, 1000])
@pytest.mark.parametrize(("text", "pieces"), [
    ("Aye, I can mend it by morning. Five gold.", ["Aye,", "I can mend it by morning.", "Five gold."]),
    ("Hmph. Five gold, and not a copper less.", ["Hmph.", "Five gold, and not a copper less."]),
    ("Well \u2014 that depends. Ask me later.", ["Well \u2014", "that depends.", "Ask me later."]),
    ("Yes: the gate is open.", ["Yes:", "the gate is open."]),
    ("It costs 1,000 gold, lad.", ["It costs 1,000 gold,", "lad."]),
    ("(grumbles, wipes hands) Fine, I will.", ["(grumbles, wipes hands) Fine,", "I will."]),
    # an apology opener stays whole, so the out-of-character check sees all of it
    ("I'm sorry, but I can't help with that.", ["I'm sorry, but I can't help with that."]),
    ("Sorry, lad, no.", ["Sorry, lad, no."]),
])
def test_the_first_piece_may_be_a_clause(text: str, pieces: list[str], piece: int) -> None:
    assert split_stream(text, piece, first_clause=True) == pieces


def test_a_clause_is_handed_on_once_the_next_word_begins() -> None:
    splitter = SentenceSplitter(first_clause=True)
    assert splitter.feed("Aye,") == []
    assert splitter.feed(" I") == ["Aye,"]
    assert splitter.feed(" can, if you pay.") == []  # only the first piece is a clause
    assert splitter.flush() == "I can, if you pay."
