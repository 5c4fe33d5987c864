"""The scene player's playback of received frames (reorder, loss concealment)."""

import numpy as np
import pytest

from glyphoxa_audio.opus import OpusEncoder, frames_of
from glyphoxa_audio.wav import to_stereo
from glyphoxa_cli.results import _play_turn

pytestmark = pytest.mark.unit


def test_frames_arriving_out_of_order_play_in_order_and_a_lost_one_is_concealed():
    t = np.arange(48000) / 48000
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    enc = OpusEncoder()
    packets = [enc.encode(to_stereo(f)) for f in frames_of(pcm, 960)]
    arrivals = [(seq, 1000 + order, packet, "greta")
                for order, (seq, packet) in enumerate(reversed(list(enumerate(packets))))]
    del arrivals[10]  # one frame never arrives
    audio = _play_turn("alex-1", "greta", arrivals)
    assert len(audio) == len(packets) * 960  # the lost frame's 20 ms is filled, not dropped
    spectrum = np.abs(np.fft.rfft(audio[4800:].astype(float)))
    assert abs(np.argmax(spectrum) * 48000 / len(audio[4800:]) - 300) < 5


class _Msg:
    def __init__(self, event) -> None:  # type: ignore[no-untyped-def]
        self.data, self.headers = event.to_bytes(), {}


class _Bus:
    """Stands in for NATS: keeps what the player publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def jetstream(self) -> "_Bus":
        return self

    async def publish(self, subject: str, body: bytes, headers: dict | None = None) -> None:
        self.published.append((subject, body))


@pytest.mark.parametrize("audio_first", [False, True])
async def test_the_player_reports_what_was_heard_with_the_reply_text_in_either_order(audio_first):
    """tts may finish a short reply before the brain's turn event arrives; the player (the
    edge of a scene) reports Played once it has both, with the reply's text, exactly once."""
    from glyphoxa_campaign import Campaign, Npc
    from glyphoxa_cli.player import ScenePlayer
    from glyphoxa_cli.scenefile import Scene
    from glyphoxa_events.models import AudioDone, Outcome, Played, TurnEnded

    class Door:
        tenant = "t1"

    bus = _Bus()
    player = ScenePlayer(bus, Scene("s", 48000, {}, []), Campaign(name="c", npcs=[Npc(
        name="Tobias", persona="innkeeper")]), Door())  # type: ignore[arg-type]
    player.session = "s1"
    turn = TurnEnded(turn_id="drew-143", speaker="drew", transcript="Tobias, a room?",
                     npc="tobias", outcome=Outcome.answered, reply_text="One silver a night.")
    done = AudioDone(turn_id="drew-143", npc="tobias", frames=35)
    for event in ([done, turn] if audio_first else [turn, done]):
        await player._on_ctl(_Msg(event))  # noqa: SLF001
    await player._on_ctl(_Msg(done))  # a redelivery reports nothing more
    assert len(bus.published) == 1
    subject, body = bus.published[0]
    played = Played.model_validate_json(body)
    assert subject == "glx.t1.s1.ctl.played"
    assert played.text_heard == "One silver a night." and played.complete


async def test_a_session_ended_under_the_player_ends_its_wait_with_the_reason():
    """The system ended the session (say, a stage died with nobody to take over): what the
    session still owes will not come, so the player stops waiting and says why."""
    import time

    from glyphoxa_campaign import Campaign, Npc
    from glyphoxa_cli.player import ScenePlayer
    from glyphoxa_cli.scenefile import Scene
    from glyphoxa_events.models import SessionStopped, UtteranceEnded, UtteranceStarted

    class Door:
        tenant = "t1"

    player = ScenePlayer(_Bus(), Scene("s", 48000, {}, []), Campaign(name="c", npcs=[Npc(
        name="Tobias", persona="innkeeper")]), Door(), timeout_s=30)  # type: ignore[arg-type]
    player.collected.utterances["drew-1"] = UtteranceStarted.model_construct(utterance_id="drew-1")
    player.collected.ended["drew-1"] = UtteranceEnded.model_construct(utterance_id="drew-1")
    await player._on_ctl(_Msg(SessionStopped(reason="no live tts stage for 15 s")))  # noqa: SLF001
    player.collected.last_event_mono = time.monotonic() - 10
    started = time.monotonic()
    await player._wait_done()  # noqa: SLF001
    assert time.monotonic() - started < 1
    assert player.collected.pending() == ["transcript of drew-1"]
    assert player.collected.stopped.reason == "no live tts stage for 15 s"


def test_turns_jsonl_and_the_turns_table_say_why_each_turn_went_where_it_went():
    """Each row of turns.jsonl carries the turn's routing and failure; `glyphoxa turns`
    prints them as its reason column, and still reads rows written before them."""
    from glyphoxa_campaign import Campaign, Npc
    from glyphoxa_cli.player import ScenePlayer
    from glyphoxa_cli.results import format_table, reason_text, turn_rows
    from glyphoxa_cli.scenefile import Scene
    from glyphoxa_events.models import (
        FailureStage,
        NameMatch,
        Outcome,
        RouteKind,
        RoutingExplained,
        Transcript,
        TurnEnded,
        TurnFailure,
    )

    class Door:
        tenant = "t1"

    player = ScenePlayer(_Bus(), Scene("s", 48000, {}, []), Campaign(name="c", npcs=[Npc(
        name="Tobias", persona="innkeeper")]), Door())  # type: ignore[arg-type]
    named = RoutingExplained(kind=RouteKind.name_start, npc="tobias", name="Tobias",
                             name_kind="name", matched="Tobyas", word=0, start=0, end=6,
                             match=NameMatch.fuzzy, score=83.3, why="named at the start")
    mention = RoutingExplained(kind=RouteKind.table_talk, mentioned="tobias", name="Tobias",
                               matched="Tobias", match=NameMatch.exact, score=100,
                               why="talks about Tobias, not to: 'Tobias' comes after 'ask'")
    timeout = TurnFailure(stage=FailureStage.llm, provider="gemini",
                          error="gemini: no answer within 8.0 s", retryable=True)
    for n, (text, outcome, routing, failure) in enumerate([
            ("Tobyas, a room?", Outcome.answered, named, None),
            ("We should ask Tobias.", Outcome.not_addressed, mention, None),
            ("Tobias, and supper?", Outcome.timed_out, named, timeout)]):
        utt = f"drew-{n}"
        player.collected.finals[utt] = Transcript(utterance_id=utt, speaker="drew", text=text,
                                                  final=True, start_ns=n, speech_end_ns=n + 1)
        player.collected.turns[utt] = TurnEnded(
            turn_id=utt, speaker="drew", transcript=text, npc=routing.npc, outcome=outcome,
            reason=routing.why, routing=routing, failure=failure)
    rows = turn_rows(player)
    assert RoutingExplained.model_validate(rows[0]["routing"]) == named
    assert rows[0]["failure"] is None
    assert TurnFailure.model_validate(rows[2]["failure"]) == timeout
    assert [reason_text(r) for r in rows] == [
        "named at start 'Tobyas'~Tobias fuzzy 83",
        "table talk: Tobias, not to: 'Tobias' comes after 'ask'",
        "llm/gemini: no answer within 8.0 s (retryable)",
    ]
    old = {k: v for k, v in rows[1].items() if k not in ("routing", "failure")}
    assert reason_text(old) == mention.why
    table = format_table([*rows, old])
    assert "reason" in table.splitlines()[0]
    assert "named at start 'Tobyas'~Tobias fuzzy 83" in table
    assert "llm/gemini: no answer within 8.0 s (retryable)" in table
    assert "talks about Tobias, not to: 'Tobias' comes afte\u2026" in table  # cut to its column


def test_a_line_too_late_for_a_follow_up_says_how_late_in_the_table():
    from glyphoxa_cli.results import reason_text

    row = {"reason": "x", "routing": {
        "kind": "none", "last_npc": "tobias", "since_last_ms": 40_000, "window_ms": 30_000,
        "why": "no NPC named, and Tobias was addressed 40.0 s before, past the 30 s follow-up "
               "window"}}
    assert reason_text(row) == "no name; tobias 40.0 s ago, past the 30 s window"
    assert reason_text({"reason": "x", "routing": {"kind": "only_npc"}}) == "the only NPC"


def test_each_turn_row_says_what_arrived_of_its_audio_against_what_tts_sent():
    """A concealed gap or two syntheses mixed into one turn make its audio garbled; the row
    says so (the scene tests check it before they listen)."""
    from glyphoxa_cli.results import audio_summary
    from glyphoxa_events.models import AudioDone

    whole = [(0, 1, b"a", "greta"), (1, 2, b"b", "greta"), (1, 3, b"b", "greta")]
    assert audio_summary(whole, AudioDone(turn_id="u", npc="greta", frames=2)) == {
        "sent": 2, "received": 2, "missing": 0, "differing": 0}
    gappy_mixed = [(0, 1, b"a", "greta"), (3, 2, b"d", "greta"), (0, 3, b"x", "greta")]
    assert audio_summary(gappy_mixed, AudioDone(
        turn_id="u", npc="greta", frames=4, cancelled=True, reason="stale: late")) == {
        "sent": 4, "received": 2, "missing": 2, "differing": 1, "cancelled": "stale: late"}
    assert audio_summary([], None) == {"sent": None, "received": 0, "missing": 0, "differing": 0}


def test_the_player_waits_a_while_for_frames_tts_says_it_sent():
    """Frames follow on a stream of their own and may trail the turn's AudioDone: the scene
    is not done while some are missing, for ``FRAMES_GRACE_S``; then they are reported."""
    import time

    from glyphoxa_cli.player import FRAMES_GRACE_S, Collected
    from glyphoxa_events.models import AudioDone

    c = Collected()
    c.audio_done["u"] = AudioDone(turn_id="u", npc="greta", frames=3)
    c.audio_done_mono["u"] = time.monotonic()
    c.frames["u"] += [(0, 1, b"a", "greta"), (1, 2, b"b", "greta"), (1, 3, b"b", "greta")]
    c.received["u"] |= {0, 1}  # as the player's audio callback keeps them
    assert c.pending() == ["frames of u (2 of 3)"]
    c.audio_done_mono["u"] -= FRAMES_GRACE_S + 1
    assert c.pending() == []  # given up on: the row says what is missing
    c.audio_done_mono["u"] = time.monotonic()
    c.frames["u"].append((2, 4, b"c", "greta"))
    c.received["u"].add(2)
    assert c.pending() == []


def test_the_turns_table_says_when_a_replys_audio_came_damaged_or_cut():
    from glyphoxa_cli.results import audio_note, format_table

    whole = {"sent": 90, "received": 90, "missing": 0, "differing": 0}
    assert audio_note(whole) == "" and audio_note(None) == ""
    assert audio_note({"sent": 97, "received": 85, "missing": 12, "differing": 3}) == (
        "audio: 12 of 97 frames missing, 3 frames sent twice, differently")
    cut = {**whole, "cancelled": "flush: barge-in"}
    row = {"player": "drew", "npc": "Greta", "outcome": "answered", "reason": "x",
           "transcript": "Greta?", "reply": "Yes?", "audio": cut, "latency_ms": {}}
    assert "'Greta?' -> Yes?  [audio: cut (flush: barge-in)]" in format_table([row])
