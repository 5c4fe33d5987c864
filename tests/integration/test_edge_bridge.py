"""The edge's session bridge on a real NATS JetStream: players' packets reach
``audio.in.<speaker>`` (speaker announced first), ``audio.out`` plays into the voice
connection at 20 ms pace, a barge-in while an NPC is audible flushes it, ``ctl.played`` says
what was heard, and ``session.stopped`` ends the bridge."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats.errors
import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_audio.opus import OpusEncoder
from glyphoxa_audio.wav import to_stereo
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.publisher import Publisher
from glyphoxa_discord_edge.bridge import SessionBridge
from glyphoxa_events import headers as H
from glyphoxa_events.frames import pack as pack_frames
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    Flush,
    Outcome,
    Played,
    SessionStopped,
    Speaker,
    TurnEnded,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_vad.core import AudioFrame, Rejection, SessionVad
from glyphoxa_vad.segmenter import SegmenterConfig, UtteranceEnd
from tests.support.service import wait_for
from tests.unit.vad.vad_feed import EnergyEngine, tone

pytestmark = pytest.mark.integration


class Voice:
    """The voice connection's send side: what was played, and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def send(self, opus: bytes) -> None:
        self.sent.append((time.monotonic(), opus))

    def audio(self) -> list[bytes]:
        return [p for _, p in self.sent if p != b"\xf8\xff\xfe"]


async def frames(pub: Publisher, s: SessionSubjects, turn: str, n: int, npc: str = "greta") -> None:
    """A turn's frames as tts sends them: the first alone, the rest up to 10 a message."""
    starts = [0, *range(1, n, 10)] if n > 1 else [0]
    for first, end in zip(starts, [*starts[1:], n], strict=True):
        body, count = pack_frames([f"{turn}:{seq}".encode() for seq in range(first, end)])
        await pub.publish(s.audio_out(npc), body, f"aout:{turn}:{first}",
                          {H.TURN: turn, H.SEQ: str(first), H.PUBLISHED_NS: str(time.time_ns()),
                           **count})


async def control(pub: Publisher, s: SessionSubjects, event, key: str) -> None:  # type: ignore[no-untyped-def]
    await pub.publish_event(s.ctl(event.type), event, f"ctl:test:{key}")


async def test_a_session_bridged_both_ways(nats_url, tenant):
    nc = await connect(BusSettings(url=nats_url), "edge-test")
    pub = Publisher(nc)
    s = SessionSubjects(tenant, "s1")
    voice, stopped = Voice(), asyncio.Event()

    async def on_stopped(reason: str) -> None:
        stopped.set()

    bridge = SessionBridge(nc, pub, s, voice, {1001: "Alex"}.get, on_stopped=on_stopped)
    js = nc.jetstream()
    ins = await js.subscribe(s.audio_in("*"), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    ctl = await js.subscribe(s.ctl(">"), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    await bridge.start()
    try:
        # in: a player speaks
        for n in range(5):
            bridge.packet(1001, 500 + n, 960 * n, b"opus%d" % n, time.time_ns())
        got = [await ins.next_msg(3) for _ in range(5)]
        assert [m.subject for m in got] == [s.audio_in("alex")] * 5
        assert [m.data for m in got] == [b"opus%d" % n for n in range(5)]
        seqs = [int(m.headers[H.SEQ]) for m in got]  # capture time in 20 ms frames
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        assert parse_control((await ctl.next_msg(3)).data) == Speaker(speaker="alex",
                                                                      display_name="Alex")

        # out: a whole turn, in a burst, played at pace and reported heard
        await control(pub, s, TurnEnded(turn_id="alex-1", speaker="alex", transcript="Greta?",
                                        npc="greta", outcome=Outcome.answered,
                                        reply_text="Forty gold."), "turn1")
        await frames(pub, s, "alex-1", 25)
        await control(pub, s, AudioDone(turn_id="alex-1", npc="greta", frames=25), "done1")
        await wait_for(lambda: len(voice.audio()) == 25, 5)
        assert voice.audio() == [f"alex-1:{n}".encode() for n in range(25)]
        times = [t for t, p in voice.sent if p != b"\xf8\xff\xfe"]
        assert 0.4 < times[-1] - times[0] < 0.6  # 24 intervals of 20 ms, not a burst

        async def played(turn: str) -> Played:
            while True:
                event = parse_control((await ctl.next_msg(3)).data)
                if isinstance(event, Played) and event.turn_id == turn:
                    return event

        heard = await played("alex-1")
        assert heard.complete and heard.text_heard == "Forty gold."

        # a barge-in while Greta is audible cuts her off and flushes her turn
        await control(pub, s, TurnEnded(turn_id="alex-2", speaker="alex", transcript="And?",
                                        npc="greta", outcome=Outcome.answered,
                                        reply_text="Dwarven steel does not come cheap, friend."),
                      "turn2")
        await frames(pub, s, "alex-2", 100)
        await wait_for(lambda: len(voice.audio()) >= 25 + 40, 5)
        await control(pub, s, BargeIn(speaker="alex", at_ns=time.time_ns()), "barge")
        flushes = await js.subscribe(s.ctl("flush"), ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.ALL)
        flush = parse_control((await flushes.next_msg(3)).data)
        assert isinstance(flush, Flush) and flush.turn_id == "alex-2" and flush.reason == "bargein"
        spoken = len(voice.audio())
        # tts stops on the flush and says how far it got
        await control(pub, s, AudioDone(turn_id="alex-2", npc="greta", frames=100,
                                        cancelled=True), "done2")
        cut = await played("alex-2")
        assert not cut.complete and cut.text_heard
        assert "Dwarven steel does not come cheap, friend.".startswith(cut.text_heard)
        await asyncio.sleep(0.2)
        assert len(voice.audio()) == spoken < 125  # nothing more of her after the cut

        await control(pub, s, SessionStopped(reason="gm went home"), "stop")
        await asyncio.wait_for(stopped.wait(), 3)
    finally:
        await bridge.close()
        await nc.close()


async def test_a_player_is_heard_after_a_rejoin_and_after_an_edge_restart(nats_url, tenant):
    """Alex talks, leaves the call and rejoins (his client numbers its RTP packets afresh,
    below the old numbers), then the edge restarts and a new bridge takes the session up
    under the same speaker token. Every packet is stored on ``audio.in`` (none dropped as
    late, none as a duplicate message id), numbered upwards, and vad takes every frame and
    hears three utterances (issue 13, item 5)."""
    nc = await connect(BusSettings(url=nats_url), "edge-test")
    pub = Publisher(nc)
    s = SessionSubjects(tenant, "s1")
    encoder = OpusEncoder()
    speech = tone(400)
    packets = [encoder.encode(to_stereo(speech[n * 960:(n + 1) * 960])) for n in range(20)]
    t0 = time.time_ns()

    async def talk(bridge: SessionBridge, rtp_start: int, at_ns: int) -> None:
        for n, packet in enumerate(packets):
            bridge.packet(1001, (rtp_start + n) & 0xFFFF, 960 * n, packet, at_ns + n * 20_000_000)

    bridge = SessionBridge(nc, pub, s, Voice(), {1001: "Alex"}.get)
    await bridge.start()
    restarted: SessionBridge | None = None
    try:
        await talk(bridge, 40_000, t0)
        await talk(bridge, 39_000, t0 + 1_500_000_000)  # rejoined: a fresh RTP stream
        await bridge.close()  # the edge goes away ...
        restarted = SessionBridge(nc, pub, s, Voice(), {1001: "Alex"}.get)
        await restarted.start()  # ... and takes the session up again
        await talk(restarted, 0, t0 + 3_000_000_000)
        await restarted.close()

        ins = await nc.jetstream().subscribe(s.audio_in("*"), ordered_consumer=True,
                                              deliver_policy=DeliverPolicy.ALL)
        stored = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while len(stored) < 60:
                stored.append(await ins.next_msg(2))
        await ins.unsubscribe()
        assert len(stored) == 60 and {m.subject for m in stored} == {s.audio_in("alex")}
        seqs = [int(m.headers[H.SEQ]) for m in stored]
        assert seqs == sorted(set(seqs))
        assert bridge.inbound.counters.late == restarted.inbound.counters.late == 0

        vad = SessionVad(SegmenterConfig(), EnergyEngine())
        out = []
        for n, m in enumerate(stored):
            out += vad.push(AudioFrame("alex", int(m.headers[H.SEQ]),
                                       int(m.headers[H.CAPTURE_NS]), n + 1, m.data))
        out += vad.finish()
        assert [o for o in out if isinstance(o, Rejection)] == []
        assert len([o for o in out if isinstance(o, UtteranceEnd)]) == 3
    finally:
        await bridge.close()
        if restarted is not None:
            await restarted.close()
        await nc.close()
