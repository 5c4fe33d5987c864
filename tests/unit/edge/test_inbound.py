"""Players' packets onto ``audio.in.<speaker>``: speaker tokens instead of Discord ids, the
speaker event first, packets unchanged, sequence and capture time from RTP."""

from __future__ import annotations

import pytest

from glyphoxa_discord_edge.inbound import SPURT_GAP_NS, Inbound
from glyphoxa_events.models import Event, Speaker, parse_control
from glyphoxa_events.subjects import SessionSubjects

pytestmark = pytest.mark.unit

MS = 1_000_000
NAMES = {1001: "Alex the Bold", 1002: "Bea", 1003: "🎲🎲", 1004: "Alex the bold!"}


class Bus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str, dict[str, str]]] = []

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        self.sent.append((subject, data, msg_id, dict(headers or {})))

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)

    def audio(self) -> list[tuple[str, bytes, str, dict[str, str]]]:
        return [m for m in self.sent if ".audio.in." in m[0]]


def inbound() -> tuple[Inbound, Bus]:
    bus = Bus()
    return Inbound(bus, SessionSubjects("t1", "s1"), lambda uid: NAMES.get(uid, "")), bus


async def test_speakers_get_tokens_announced_before_their_first_packet():
    side, bus = inbound()
    for uid in (1001, 1002, 1003, 1004, 1001):
        await side.packet(uid, 10, 960, b"opus-" + str(uid).encode(), 1_000 * MS)
    kinds = [m[0].rsplit(".", 2)[-2:] for m in bus.sent]
    assert kinds[:2] == [["ctl", "speaker"], ["in", "alex-the-bold"]]
    speakers = [parse_control(m[1]) for m in bus.sent if m[0].endswith(".ctl.speaker")]
    assert [(e.speaker, e.display_name) for e in speakers if isinstance(e, Speaker)] == [
        ("alex-the-bold", "Alex the Bold"), ("bea", "Bea"), ("player-2", "🎲🎲"),
        ("alex-the-bold-2", "Alex the bold!")]
    assert side.speaker_of(1001) == "alex-the-bold" and side.speaker_of(9) is None
    assert [m[2] for m in bus.sent if m[0].endswith(".ctl.speaker")][0] == (
        "ctl:t1.s1:speaker:alex-the-bold")
    for subject, data, _, headers in bus.audio():  # packets unchanged, no Discord id anywhere
        assert data.startswith(b"opus-") and "1001" not in subject and headers["Glx-Codec"] == "opus"


async def test_sequence_is_the_capture_time_in_frames_across_the_16_bit_wrap_and_late_ones_drop():
    side, bus = inbound()
    t = 1_000 * MS  # frame 50
    for n, rtp in ((0, 65534), (1, 65535), (2, 0), (3, 1), (5, 3)):  # RTP 2 is late
        await side.packet(1002, rtp, 960 * n, b"x", t + 20 * MS * n)
    await side.packet(1002, 2, 960 * 4, b"late", t + 100 * MS)  # after RTP 3 went out
    audio = bus.audio()
    assert [h["Glx-Seq"] for *_, h in audio] == ["50", "51", "52", "53", "55"]
    assert [m[2] for m in audio][-1] == "ain:t1.s1:bea:55"
    assert side.counters.late == 1 and side.counters.published == 5


async def test_a_member_who_rejoins_with_a_lower_rtp_sequence_is_heard():
    """A client that rejoins the call numbers its packets afresh from a random start: below
    the old numbers, they are not late packets of the old stream (issue 13, item 5)."""
    side, bus = inbound()
    t = 1_000 * MS
    for n in range(10):
        await side.packet(1002, 40_000 + n, 960 * n, b"before", t + 20 * MS * n)
    later = t + 3_000 * MS
    for n in range(10):
        await side.packet(1002, 39_000 + n, 123 + 960 * n, b"after", later + 20 * MS * n)
    audio = bus.audio()
    assert [m[1] for m in audio] == [b"before"] * 10 + [b"after"] * 10
    seqs = [int(h["Glx-Seq"]) for *_, h in audio]
    assert seqs == sorted(set(seqs)) and seqs[10] == later // (20 * MS)
    assert side.counters.late == 0


async def test_a_restarted_edge_numbers_on_above_what_the_old_one_published():
    """After an edge restart a new bridge (a new ``Inbound``) takes the session up, under
    the same speaker token: its sequence numbers and message ids go on, they do not start
    again at 0 (vad would refuse the frames, JetStream drop them as duplicates)."""
    before, old_bus = inbound()
    t = 1_000 * MS
    for n in range(10):
        await before.packet(1002, 500 + n, 960 * n, b"x", t + 20 * MS * n)
    after, new_bus = inbound()  # the restarted edge: nothing remembered
    later = t + 1_000 * MS
    for n in range(10):
        await after.packet(1002, 7 + n, 960 * n, b"x", later + 20 * MS * n)
    old, new = old_bus.audio(), new_bus.audio()
    assert {m[0] for m in old} == {m[0] for m in new}  # the same speaker token
    assert int(new[0][3]["Glx-Seq"]) > int(old[-1][3]["Glx-Seq"])
    assert not {m[2] for m in old} & {m[2] for m in new}


async def test_capture_time_follows_rtp_within_a_spurt_and_restarts_after_a_pause():
    side, bus = inbound()
    t = 5_000 * MS
    # arrival jitters, RTP advances 20 ms a packet (and wraps its 32 bits)
    base = 2**32 - 960 * 2
    arrivals = (0, 35, 38, 61)
    for n, jitter in enumerate(arrivals):
        await side.packet(1002, 100 + n, (base + 960 * n) % 2**32, b"x", t + jitter * MS)
    later = t + 61 * MS + SPURT_GAP_NS + 500 * MS
    await side.packet(1002, 104, 7, b"x", later)  # a new spurt: its arrival
    captures = [int(h["Glx-Capture-Ns"]) for *_, h in bus.audio()]
    assert captures[:4] == [t, t + 20 * MS, t + 40 * MS, t + 60 * MS]
    assert captures[4] == later
