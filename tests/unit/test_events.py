import pytest

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events.models import (
    MAX_EVENT_BYTES,
    BargeIn,
    MalformedEvent,
    Outcome,
    SessionStarted,
    Transcript,
    TurnEnded,
    parse_as,
    parse_control,
)

pytestmark = pytest.mark.unit
CAMPAIGN = Campaign(name="c", npcs=[Npc(name="Greta", persona="p")])


def test_control_events_round_trip_by_type():
    for event in (SessionStarted(campaign=CAMPAIGN, started_ns=1), BargeIn(speaker="alex", at_ns=5),
                  TurnEnded(turn_id="alex-3", speaker="alex", transcript="hi", outcome=Outcome.not_addressed)):
        assert parse_control(event.to_bytes()) == event


@pytest.mark.parametrize("body, fragment", [
    (b"{", "Invalid JSON"),
    (b'{"type": "nope"}', "type"),
    (b'{"type": "bargein", "speaker": "Alex.>", "at_ns": 1}', "speaker"),
    (b'{"type": "bargein", "speaker": "alex", "at_ns": -1}', "at_ns"),
    (b'{"type": "bargein", "speaker": "alex", "at_ns": 1, "extra": 1}', "extra"),
])
def test_malformed_control_events_name_the_problem(body, fragment):
    with pytest.raises(MalformedEvent, match=fragment):
        parse_control(body)


def test_oversized_events_are_rejected_unparsed():
    with pytest.raises(MalformedEvent, match="exceeds"):
        parse_as(Transcript, b" " * (MAX_EVENT_BYTES + 1))


def test_ids_cannot_smuggle_subject_tokens():
    with pytest.raises(MalformedEvent):
        parse_control(b'{"type": "flush", "turn_id": "a b*"}')
