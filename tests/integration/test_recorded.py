"""Reading a session back from the replayable streams (glyphoxa_bus.recorded) on a real
nats-server: everything kept on a subject, in order, with headers and store times."""

from __future__ import annotations

import os
import time

import pytest

from glyphoxa_bus.recorded import count_kept, kept_since, read_kept
from glyphoxa_bus.streams import MEDIA, ensure_streams
from glyphoxa_events import headers as H
from glyphoxa_events.subjects import SessionSubjects

pytestmark = pytest.mark.integration


async def test_reads_every_kept_frame_of_a_session_in_order(nc, tenant):
    js = nc.jetstream()
    await ensure_streams(js)
    mine, other = SessionSubjects(tenant, "s1"), SessionSubjects(tenant, "s2")
    before = time.time_ns()
    for i in range(300):
        speaker = ("robin", "casey")[i % 2]
        await js.publish(mine.audio_in(speaker), bytes([i % 256]) * 3,
                         headers={H.SEQ: str(i), H.CAPTURE_NS: str(before + i)})
    await js.publish(other.audio_in("robin"), b"x")

    assert await count_kept(js, MEDIA, mine.audio_in("*")) == 300
    assert await count_kept(js, MEDIA, SessionSubjects(tenant, "none").audio_in("*")) == 0
    got = await read_kept(js, MEDIA, mine.audio_in("*"))
    assert [int(r.headers[H.SEQ]) for r in got] == list(range(300))
    assert got[1].subject == mine.audio_in("casey") and got[1].data == b"\x01" * 3
    assert all(before - 1_000_000 <= r.stored_ns <= time.time_ns() for r in got)
    assert await read_kept(js, MEDIA, SessionSubjects(tenant, "none").audio_in("*")) == []
    if os.environ.get("NATS_URL"):
        return  # a shared server: its streams are not this test's to purge
    assert await kept_since(js, MEDIA) == 0  # nothing dropped yet
    await js.purge_stream(MEDIA, keep=10)  # as if the oldest had aged out
    oldest = await kept_since(js, MEDIA)
    assert oldest is not None and got[-10].stored_ns <= oldest <= got[-1].stored_ns


def test_a_capture_clock_that_ran_ahead_maps_back_to_the_wall_clock():
    from glyphoxa_bus.recorded import CaptureClock

    t0 = 1_000_000_000_000  # a scene played at 4x: 20 ms of capture every 5 ms
    pairs = [(t0 + i * 20_000_000, t0 + i * 5_000_000 + 3_000_000) for i in range(0, 500, 2)]
    clock = CaptureClock.of(pairs)
    assert clock is not None
    assert clock.wall_of(t0 + 101 * 20_000_000) == t0 + 101 * 5_000_000 + 3_000_000
    assert clock.wall_of(t0 + 600 * 20_000_000) == t0 + 600 * 5_000_000 + 3_000_000  # past the end
    assert clock.capture_of(t0 + 50 * 5_000_000 + 3_000_000) == t0 + 50 * 20_000_000
    real_time = [(t0 + i * 20_000_000, t0 + i * 20_000_000 + 4_000_000) for i in range(100)]
    assert CaptureClock.of(real_time) is None  # an edge: capture and wall time agree
