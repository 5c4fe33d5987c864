"""Comparing a replay's turns with the original's (glyphoxa_cli.replay.diff_turns) and
drawing a timeline (glyphoxa_cli.timeline_view)."""

from __future__ import annotations

import pytest

from glyphoxa_cli.replay import diff_turns, format_diff
from glyphoxa_cli.timeline_view import format_timeline, timeline_html

pytestmark = pytest.mark.unit


def row(player: str, start: float, npc: str | None, outcome: str, route: str | None = None,
        text: str = "line") -> dict:
    return {"utterance": f"{player}-{start}", "player": player, "start_s": start,
            "end_s": start + 1.5, "transcript": text, "npc": npc, "outcome": outcome,
            "reason": "", "reply": "Aye." if outcome == "answered" else "",
            "routing": {"kind": route} if route else None, "failure": None,
            "latency_ms": {"stt_final": 300.0, "first_audio": 700.0}}


def test_turns_pair_by_player_and_time_and_compare_route_npc_and_outcome():
    original = [row("drew", 5.0, "Bruno", "answered", "name_start", "Bruno, fix it?"),
                row("casey", 12.0, "Bruno", "answered", "followup"),
                row("robin", 20.0, None, "not_addressed", "table_talk"),
                row("robin", 30.0, "Tobias", "answered", "name_start")]
    replay = [row("casey", 12.2, "Bruno", "answered", None),  # an old brain: no route recorded
              row("drew", 5.1, None, "not_addressed", "none", "Bruno, fix it?"),
              row("robin", 20.3, None, "not_addressed", "table_talk"),
              row("casey", 40.0, "Tobias", "answered", "name_start")]  # a line the original lacks
    diff = diff_turns(original, replay)
    by_start = {d["start_s"]: d for d in diff}
    assert by_start[5.0]["differences"] == ["route", "npc", "outcome"]
    assert by_start[12.0]["same"]  # a route missing on one side is not a difference
    assert by_start[20.0]["same"]
    assert by_start[30.0]["differences"] == ["missing in replay"] and by_start[30.0]["replay"] is None
    assert by_start[40.0]["differences"] == ["only in replay"] and by_start[40.0]["original"] is None
    table = format_diff(diff)
    assert "Bruno -> -" in table and "answered -> not_addressed" in table
    assert "differs: route, npc, outcome" in table and "differs: missing in replay" in table


def test_a_turn_far_from_any_original_is_not_paired():
    diff = diff_turns([row("drew", 5.0, "Bruno", "answered")], [row("drew", 9.0, "Bruno", "answered")])
    assert [d["differences"] for d in diff] == [["missing in replay"], ["only in replay"]]


TIMELINE = {
    "tenant": "acme", "session": "s1", "origin_ns": 0, "source": "stream",
    "turns": [
        {"turn_id": "alice-1", "speaker": "alice", "transcript": "Greta, <a sword>?",
         "npc": "greta", "npc_name": "Greta", "outcome": "answered", "reason": "", "reply": "Aye.",
         "routing": {"kind": "name_start", "matched": "Greta", "match": "exact"}, "failure": None,
         "marks": [{"kind": k, "at_ms": t, "detail": ""} for k, t in (
             ("speech_start", 1000.0), ("speech_end", 2000.0), ("vad_end", 2300.0),
             ("stt_final", 2500.0), ("routed", 2500.0), ("first_token", 2700.0),
             ("first_sentence", 2900.0), ("first_audio_published", 3100.0),
             ("first_audio_played", 3200.0), ("audio_done", 4000.0))]},
        {"turn_id": "bob-1", "speaker": "bob", "transcript": "Tobias?", "npc": "tobias",
         "npc_name": "Tobias", "outcome": "failed", "reason": "llm failed", "reply": "",
         "routing": None, "failure": {"stage": "llm", "provider": "gemini", "error": "quota",
                                       "retryable": False},
         "marks": [{"kind": "speech_end", "at_ms": 5000.0, "detail": ""},
                   {"kind": "failed", "at_ms": 6000.0, "detail": "stage llm; provider gemini"}]},
    ],
    "events": [{"kind": "bargein", "at_ms": 3500.0, "detail": "bob talked over the NPCs"}],
}


def test_the_timeline_table_gives_latencies_after_speech_end_and_why():
    text = format_timeline(TIMELINE)
    line = next(x for x in text.splitlines() if x.strip().startswith("1.0 alice"))
    assert line.split()[4:10] == ["300", "500", "700", "900", "1100", "1200"]
    assert "named at start 'Greta'" in line and "Greta" in line
    assert "llm/gemini: quota (permanent)" in text and "failed: stage llm" in text
    assert "bargein: bob talked over the NPCs" in text


def test_the_html_waterfall_is_self_contained_and_names_every_turn():
    page = timeline_html(TIMELINE)
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "alice-1" in page and "bob-1" in page
    assert "Greta, &lt;a sword&gt;?" in page  # escaped, never raw markup
    assert "<link" not in page and "<script" not in page and "src=" not in page
    assert "first token +700 ms" in page


def test_a_replay_starts_a_second_before_the_first_words_with_each_frame_once():
    from glyphoxa_campaign import load_campaign
    from glyphoxa_cli.recording import Recording
    from glyphoxa_cli.replay import recorded_outgoing, replay_origin
    from glyphoxa_cli.tracks import FRAME_NS, RecordedFrame

    t0 = 1_700_000_000_000_000_000
    campaign = load_campaign("name: Forge\nnpcs:\n  - name: Greta\n    persona: A smith.\n")
    first = t0 + 600 * 1_000_000_000  # ten minutes of a quiet table first
    frames = [RecordedFrame("robin", first // FRAME_NS + i, first + i * FRAME_NS, bytes([i]))
              for i in range(10)]
    rec = Recording("acme", "s1", campaign, t0, frames=frames + frames[3:5])  # two resent
    origin = replay_origin(rec, "audio")
    assert origin == first - 1_000_000_000
    [robin] = recorded_outgoing(rec, origin)
    assert [i for i, _ in robin.frames] == list(range(50, 60))
    assert [p for _, p in robin.frames] == [bytes([i]) for i in range(10)]
    early = Recording("acme", "s2", campaign, t0, frames=[RecordedFrame("robin", 1, t0 + FRAME_NS, b"x")])
    assert replay_origin(early, "audio") == t0  # never before the session started


def test_frames_whose_capture_times_round_onto_one_slot_keep_their_order():
    from glyphoxa_campaign import load_campaign
    from glyphoxa_cli.recording import Recording
    from glyphoxa_cli.replay import recorded_outgoing
    from glyphoxa_cli.tracks import RecordedFrame

    t0 = 1_700_000_000_000_000_000
    campaign = load_campaign("name: Forge\nnpcs:\n  - name: Greta\n    persona: A smith.\n")
    jittered = [RecordedFrame("drew", 100 + i, t0 + ms * 1_000_000, bytes([i]))
                for i, ms in enumerate((2000, 2009, 2031, 2049))]  # 2009 and 2031 ~ one slot apart
    [drew] = recorded_outgoing(Recording("acme", "s1", campaign, t0, frames=jittered), t0)
    assert drew.frames == [(100, b"\x00"), (101, b"\x01"), (102, b"\x02"), (103, b"\x03")]


def test_a_barge_in_of_a_sped_up_scene_is_placed_on_the_wall_clock():
    """vad stamps a barge-in with the speaker's capture time; a scene played at 4x captures
    four times faster than the wall clock, so unmapped it lands far after the session ended
    (seen in the timeline example: barge-ins at 18-50 s of a 15 s session)."""
    from glyphoxa_bus.recorded import CaptureClock, Recorded
    from glyphoxa_campaign import load_campaign
    from glyphoxa_events.models import BargeIn, SessionStarted
    from glyphoxa_session_control.timeline import build_timeline

    t0 = 1_700_000_000_000_000_000
    s = 1_000_000_000
    clock = CaptureClock.of([(t0 + 4 * i * s, t0 + i * s) for i in range(20)])  # 4x ahead
    campaign = load_campaign("name: Forge\nnpcs:\n  - name: Greta\n    persona: A smith.\n")
    messages = [Recorded(f"glx.acme.s1.ctl.{kind}", event.to_bytes(), {}, t0 + n * s, n + 1)
                for n, (kind, event) in enumerate((
                    ("session", SessionStarted(campaign=campaign, started_ns=t0)),
                    ("bargein", BargeIn(speaker="robin", at_ns=t0 + 40 * s))))]
    timeline = build_timeline("acme", "s1", messages, t0, clock)
    [bargein] = [m for m in timeline.events if m.kind == "bargein"]
    assert bargein.at_ms == pytest.approx(10_000, abs=1)  # 40 s of capture time = 10 s of wall


def test_a_turn_says_which_memories_it_was_given():
    turn = {**TIMELINE["turns"][0], "memories": ["41", "7"]}
    text = format_timeline({**TIMELINE, "turns": [turn]})
    assert "recalled memories 41, 7" in text
    assert "recalled memories 41, 7" in timeline_html({**TIMELINE, "turns": [turn]})
