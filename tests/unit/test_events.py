import json

import pytest

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events.models import (
    MAX_EVENT_BYTES,
    BargeIn,
    Heartbeat,
    MalformedEvent,
    Outcome,
    SessionStarted,
    Transcript,
    TurnEnded,
    Usage,
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


def test_usage_parses_on_its_own_and_is_not_a_control_event():
    usage = Usage(key="llm:alex-3:0", metric="llm_tokens_in", amount=412, provider="llama",
                  stage="npc-brain")
    body = usage.to_bytes()
    assert b'"type":"usage"' in body
    assert Usage.model_validate_json(body) == usage == parse_as(Usage, body)
    with pytest.raises(MalformedEvent):
        parse_control(body)


@pytest.mark.parametrize("change, fragment", [
    ({"metric": "gpu_seconds"}, "metric"),
    ({"amount": -1}, "amount"),
    ({"key": ""}, "key"),
    ({"key": "k" * 201}, "key"),
    ({"provider": "p" * 65}, "provider"),
    ({"stage": "npc.brain"}, "stage"),
    ({"extra": 1}, "extra"),
])
def test_malformed_usage_is_rejected(change, fragment):
    body = {"type": "usage", "key": "stt:alex-0", "metric": "stt_audio_seconds", "amount": 1.5,
            "provider": "whisper", "stage": "stt", **change}
    with pytest.raises(MalformedEvent, match=fragment):
        parse_as(Usage, json.dumps(body).encode())


def test_heartbeat_round_trips_and_checks_session_refs():
    beat = Heartbeat(role="npc-brain", replica="npc-brain-host.local-12", sessions=["t1.s1"],
                     capacity=8, at_ns=2, started_ns=1)
    assert Heartbeat.model_validate_json(beat.to_bytes()) == beat
    for bad in (["t1"], ["t1.s1.x"], ["T1.s1"], ["t1.>"]):
        with pytest.raises(MalformedEvent, match="sessions"):
            parse_as(Heartbeat, beat.model_copy(update={"sessions": bad}).to_bytes())


@pytest.mark.parametrize("body", [
    b'{"type":"npc.mute","npc":"bruno","muted":"yes"}',  # lax pydantic read this as true
    b'{"type":"npc.mute","npc":"bruno","muted":1}',
    b'{"type":"audio.done","turn_id":"t-1","npc":"bruno","frames":"35"}',
    b'{"type":"audio.done","turn_id":"t-1","npc":"bruno","frames":35.0}',
])
def test_bus_events_are_parsed_strictly(body):
    from glyphoxa_events.models import MalformedEvent, parse_control

    with pytest.raises(MalformedEvent):
        parse_control(body)


def test_strict_parsing_still_reads_what_producers_write():
    from glyphoxa_events.models import NpcMute, Outcome, TurnEnded, TurnLatency, parse_control

    turn = TurnEnded(turn_id="a-1", speaker="alex", transcript="Greta?", npc="greta",
                     outcome=Outcome.answered, latency=TurnLatency(speech_end_ns=5))
    assert parse_control(turn.to_bytes()) == turn
    assert parse_control(NpcMute(npc="bruno", muted=True).to_bytes()).muted is True


@pytest.mark.parametrize("amount", ["Infinity", "1e400", "-Infinity", "NaN"])
def test_usage_amount_must_be_a_finite_number(amount):
    """JSON has no infinity, but the parser reads ``Infinity`` (and ``1e400`` overflows to it):
    one such usage event made a tenant's monthly usage infinite (issue 13, fuzz test)."""
    body = ('{"type": "usage", "key": "llm:alex-3:0", "metric": "llm_tokens_in", "amount": '
            f'{amount}, "provider": "llama", "stage": "npc-brain"}}').encode()
    with pytest.raises(MalformedEvent, match="amount"):
        parse_as(Usage, body)
    with pytest.raises(MalformedEvent, match="audio_seconds"):
        parse_as(Transcript, Transcript(utterance_id="alex-3", speaker="alex", text="hi", final=True,
                                        start_ns=1, speech_end_ns=2).to_bytes()
                 .replace(b'"audio_seconds":0.0', f'"audio_seconds":{amount}'.encode()))


def test_turn_explains_its_routing_and_failure_and_old_turns_still_parse():
    from glyphoxa_events.models import (
        ROUTING_LABELS,
        FailureStage,
        NameMatch,
        RouteKind,
        RoutingExplained,
        TurnFailure,
    )

    routing = RoutingExplained(kind=RouteKind.name_end, npc="voss", name="Captain Voss",
                               name_kind="name", matched="Captain Boss", word=3, start=17,
                               end=29, match=NameMatch.phonetic, score=85.0, why="named at the end")
    turn = TurnEnded(turn_id="a-1", speaker="alex", transcript="Where to now, Captain Boss?",
                     npc="voss", outcome=Outcome.timed_out, routing=routing,
                     failure=TurnFailure(stage=FailureStage.llm, provider="gemini",
                                         error="gemini: no answer within 8.0 s", retryable=True))
    assert parse_control(turn.to_bytes()) == turn
    assert routing.label == "name_end_phonetic" and routing.label in ROUTING_LABELS
    old = parse_control(b'{"type":"turn","turn_id":"a-1","speaker":"alex","transcript":"hi",'
                        b'"outcome":"not_addressed"}')
    assert isinstance(old, TurnEnded) and old.routing is None and old.failure is None
    whole_score = turn.to_bytes().replace(b'"score":85.0', b'"score":85')
    assert parse_control(whole_score).routing.score == 85.0


@pytest.mark.parametrize("routing, fragment", [
    ({"kind": "guess"}, "kind"),
    ({"kind": "none", "score": 101}, "score"),
    ({"kind": "none", "why": "w" * 301}, "why"),
    ({"kind": "none", "mentioned": "Greta.>"}, "mentioned"),
    ({"kind": "none", "extra": 1}, "extra"),
])
def test_malformed_routing_explanations_are_rejected(routing, fragment):
    body = {"type": "turn", "turn_id": "a-1", "speaker": "alex", "transcript": "hi",
            "outcome": "not_addressed", "routing": routing}
    with pytest.raises(MalformedEvent, match=fragment):
        parse_control(json.dumps(body).encode())


# --- campaign memory (issue 16) ---------------------------------------------------------------

SEED = {"recaps": {"greta": "Alex swore to hunt the dragon."},
        "facts": {"greta": ["the key is under the mill", "the mayor lies"]}}


def test_session_started_carries_the_memory_seed_and_round_trips():
    from glyphoxa_events.models import SessionMemorySeed

    event = SessionStarted(campaign=CAMPAIGN, started_ns=1, memory=SEED)
    parsed = parse_control(event.to_bytes())
    assert parsed == event
    assert parsed.memory.facts["greta"] == ["the key is under the mill", "the mayor lies"]
    assert parsed.memory.recaps["greta"] == "Alex swore to hunt the dragon."
    bare = SessionStarted(campaign=CAMPAIGN, started_ns=1)
    assert bare.memory == SessionMemorySeed() and bare.memory.empty
    assert b"memory" not in bare.to_bytes()  # as before: a reader of before still parses it
    assert parse_control(bare.to_bytes()) == bare


def _started(memory: object) -> bytes:
    body = json.loads(SessionStarted(campaign=CAMPAIGN, started_ns=1).to_bytes())
    return json.dumps({**body, "memory": memory}).encode()


@pytest.mark.parametrize("memory, fragment", [
    ({"recaps": {"Greta.>": "x"}}, "invalid token"),
    ({"recaps": {"greta": "x" * 2001}}, "at most 2000"),
    ({"recaps": {"greta": "a\u0000b"}}, "NUL"),
    ({"facts": {"greta": ["a\u0000b"]}}, "NUL"),
    ({"facts": {"greta": ["  "]}}, "pattern"),
    ({"facts": {"greta": [""]}}, "at least 1"),
    ({"facts": {"greta": ["x" * 301]}}, "at most 300"),
    ({"facts": {"greta": ["x"] * 21}}, "at most 20"),
    ({"facts": {"greta": "the key"}}, "valid array"),
    ({"facts": {}, "secrets": {}}, "secrets"),
])
def test_a_bad_memory_seed_is_refused(memory, fragment):
    with pytest.raises(MalformedEvent, match=fragment):
        parse_control(_started(memory))


def test_npc_taught_is_a_control_event():
    from glyphoxa_events.models import NpcTaught, control_subject_suffix

    taught = NpcTaught(npc="greta", fact_id="1842", text="The bridge is out.")
    assert parse_control(taught.to_bytes()) == taught
    assert control_subject_suffix(taught) == "npc.taught"
    for body in (b'{"type": "npc.taught", "npc": "greta", "fact_id": "1", "text": "a\\u0000"}',
                 b'{"type": "npc.taught", "npc": "greta", "fact_id": "1", "text": " "}',
                 b'{"type": "npc.taught", "npc": "greta", "fact_id": "a b", "text": "x"}',
                 b'{"type": "npc.taught", "npc": "*", "fact_id": "1", "text": "x"}',
                 b'{"type": "npc.taught", "npc": "greta", "text": "x"}'):
        with pytest.raises(MalformedEvent):
            parse_control(body)


def test_recall_request_and_reply_round_trip_strictly():
    from glyphoxa_events.api import RecalledMemory, RecallReply, RecallRequest

    request = RecallRequest(tenant="acme", session="s2", npc="greta", text="Greta, the dragon?")
    assert request.k == 5 and parse_as(RecallRequest, request.model_dump_json().encode()) == request
    reply = RecallReply(ok=True, took_ms=4.2, embed_model="minilm-l6-int8", memories=[
        RecalledMemory(id="17", kind="exchange", text='Alex said to Greta: "The dragon!"',
                       session="s1", turn_id="alex-1200", spoken_ns=5, score=0.71),
        RecalledMemory(id="18", kind="fact", text="The key is under the mill.")])
    assert parse_as(RecallReply, reply.model_dump_json().encode()) == reply
    body = reply.model_dump_json().encode()
    for bad in (body.replace(b"0.71", b"NaN"), body.replace(b'"fact"', b'"rumour"'),
                body.replace(b"The key", b"The\\u0000key"), body.replace(b"4.2", b"-1")):
        with pytest.raises(MalformedEvent):
            parse_as(RecallReply, bad)
    request_body = request.model_dump_json().encode()
    for bad in (request_body.replace(b'"k":5', b'"k":21'), request_body.replace(b'"k":5', b'"k":0'),
                request_body.replace(b"Greta, the", b"Greta,\\u0000the"),
                request_body.replace(b'"npc":"greta"', b'"npc":"gr.*"')):
        with pytest.raises(MalformedEvent):
            parse_as(RecallRequest, bad)
