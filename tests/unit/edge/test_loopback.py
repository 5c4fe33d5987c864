"""The edge's loopback call: players' frames sealed as Discord relays them (DAVE, RTP,
transport) come out of the edge's receive path as the same opus, from the right member."""

from __future__ import annotations

import os

import pytest

from glyphoxa_discord_edge.loopback import LoopbackCall

pytestmark = pytest.mark.unit


def test_players_frames_go_through_dave_and_transport_and_come_back_the_same():
    call = LoopbackCall(["alex", "bea"])
    frames = {name: [b"\xfc" + os.urandom(40) for _ in range(5)] for name in ("alex", "bea")}
    got = []
    for n in range(5):
        for name in ("alex", "bea"):
            datagram = call.datagram(name, frames[name][n])
            assert frames[name][n] not in datagram  # sealed twice: nothing in the clear
            got += call.receive.feed(datagram, 1_000 + n)
    assert [(call.names[p.user_id], p.sequence, p.opus) for p in got] == [
        (name, n, frames[name][n]) for n in range(5) for name in ("alex", "bea")]
    counters = call.receive.counters
    assert counters.decrypted == 10 and counters.dave_failed == counters.transport_failed == 0
    assert call.hear("alex", b"\xf8\xff\xfe", 2_000)[0].opus == b"\xf8\xff\xfe"  # silence
    call.send(b"npc")
    assert call.played == [b"npc"]
