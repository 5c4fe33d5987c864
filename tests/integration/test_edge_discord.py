"""discord-edge through its real entry point against a local Discord
(``tests/support/fakes/discord.py``): the real discord.py logs in, syncs the slash commands,
takes a member's ``/session start`` as an interaction from the gateway, joins the voice
channel through the voice gateway with the DAVE handshake, and bridges the call: players'
encrypted packets reach ``audio.in`` unchanged, NPC audio reaches the players at pace and
decrypts to the frames tts made. The session survives a gateway drop (resumed), a voice
server drop (connected anew) and a gateway session that cannot be resumed."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import numpy as np
import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from glyphoxa_audio.opus import OpusEncoder
from glyphoxa_bus.heartbeat import HeartbeatPublisher
from glyphoxa_bus.publisher import Publisher
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    Outcome,
    Played,
    SessionStopped,
    Speaker,
    TurnEnded,
    parse_control,
)
from glyphoxa_events.subjects import STAGES, SessionSubjects
from glyphoxa_session_control.crypto import new_secret_key
from tests.support.control import EXAMPLE_CAMPAIGN, ControlProcess, module_control
from tests.support.fakes.discord import CONNECT, FakeDiscord, Guild, Member

pytestmark = pytest.mark.integration

EDGE_KEY = new_secret_key()
control, nc = module_control("edge-discord", {"NATS_EDGE_KEY": EDGE_KEY})


def tone(n: int, hz: float) -> list[bytes]:
    """``n`` real 20 ms opus frames of a tone (what a player's client sends)."""
    encoder = OpusEncoder()
    t = np.arange(960 * n) / 48_000
    wave = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    return [encoder.encode(np.repeat(wave[i * 960:(i + 1) * 960, None], 2, axis=1))
            for i in range(n)]


async def npc_turn(pub: Publisher, s: SessionSubjects, turn: str, frames: list[bytes]) -> None:
    """What tts publishes for one reply of Greta's: the turn, its frames, its end."""
    await pub.publish_event(s.ctl("turn.ended"), TurnEnded(
        turn_id=turn, speaker="alex", transcript="Greta?", npc="greta",
        outcome=Outcome.answered, reply_text="Forty gold."), f"ctl:test:{turn}:ended")
    for seq, frame in enumerate(frames):
        await pub.publish(s.audio_out("greta"), frame, f"aout:{turn}:{seq}",
                          {H.TURN: turn, H.SEQ: str(seq), H.PUBLISHED_NS: str(time.time_ns())})
    await pub.publish_event(s.ctl("audio.done"), AudioDone(turn_id=turn, npc="greta",
                                                           frames=len(frames)),
                            f"ctl:test:{turn}:done")


async def test_a_table_plays_through_discord(control: ControlProcess, nc: Client, tmp_path):
    gm = Member("Mira", roles=["GM"], voice="Tavern")
    alex = Member("Alex", voice="Tavern")
    bram = Member("Bram", roles=["GM"], voice="Cellar")  # where the bot may not connect
    guild = Guild("The Table", [gm, alex, bram], voice_channels=["Tavern", "Cellar"],
                  bot_denied={"Cellar": CONNECT})
    token = "MTA" + uuid.uuid4().hex + ".Gy." + uuid.uuid4().hex
    tenant, edge = "dc" + uuid.uuid4().hex[:6], "e" + uuid.uuid4().hex[:6]
    client = await control.new_tenant(tenant, EXAMPLE_CAMPAIGN + "gm_role: GM\n",
                                      bot_token=token, allowed_guild_ids=[str(guild.id)],
                                      discord_edge=edge)
    await client.close()
    fake = await FakeDiscord(token, guild, tmp_path).start()
    proc = ServiceProcess("discord-edge", {
        "NATS_URL": control.nats_url, "NATS_EDGE_KEY": EDGE_KEY, "DISCORD_EDGE_NAME": edge,
        **fake.edge_env()}, tmp_path / "edge.log").start()
    js, pub = nc.jetstream(), Publisher(nc)
    served: list[str] = []  # the stages hold the session, as vad, stt, brain and tts would
    stages = [HeartbeatPublisher(nc, stage, f"test-{stage}", lambda: served, interval_s=1.0)
              for stage in STAGES]
    beats = [asyncio.create_task(stage.run()) for stage in stages]
    try:
        proc.wait_ready(30)
        await fake.ready()
        assert {c["name"]: sorted(o["name"] for o in c["options"]) for c in fake.commands} == {
            "session": ["start", "status", "stop"],
            "npc": ["list", "mute", "muteall", "speak", "teach", "unmute", "unmuteall"],
            "recall": ["words"]}

        # who may start, and where
        refused = await fake.interact(alex, "session", "start")
        assert "only the game master may start" in refused.text()
        assert refused.answers[0]["type"] == 5  # "thinking" first: joining voice takes time
        cellar = await fake.interact(bram, "session", "start")
        assert "I lack the permission(s) Connect" in cellar.text() and "#Cellar" in cellar.text()
        assert not fake.calls

        started = await fake.interact(gm, "session", "start")
        assert "started (campaign forge) in #Tavern" in started.text()
        assert all(a["flags"] & 64 for a in started.answers[1:])  # ephemeral
        call = await fake.connected()
        assert call.players == [gm, alex]
        status = (await fake.interact(alex, "session", "status")).text()
        session = re.search(r"Session `([^`]+)` is active", status).group(1)  # type: ignore[union-attr]
        s = SessionSubjects(tenant, session)
        served.append(f"{tenant}.{session}")
        for stage in stages:
            stage.poke()
        ins = await js.subscribe(s.audio_in("*"), ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)
        ctl = await js.subscribe(s.ctl(">"), ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)

        async def heard_in(n: int) -> list[tuple[str, bytes, int]]:
            got = [await ins.next_msg(10) for _ in range(n)]
            return [(m.subject.rsplit(".", 1)[1], m.data, int(m.headers[H.SEQ])) for m in got]

        async def played(turn: str) -> Played:
            while True:
                event = parse_control((await ctl.next_msg(10)).data)
                if isinstance(event, Played) and event.turn_id == turn:
                    return event

        # a player speaks: DAVE and transport encryption off, the same opus on audio.in
        words = tone(25, 220)
        await fake.say(alex, words)
        got = await heard_in(25)
        assert [g[:2] for g in got] == [("alex", w) for w in words]
        seqs = [g[2] for g in got]  # the capture time in 20 ms frames: 20 ms apart
        assert seqs == list(range(seqs[0], seqs[0] + 25))
        speakers = []
        while not speakers:
            event = parse_control((await ctl.next_msg(10)).data)
            if isinstance(event, Speaker):
                speakers.append(event)
        assert speakers == [Speaker(speaker="alex", display_name="Alex")]

        # Greta answers: her frames reach the call at 20 ms pace, as tts made them
        reply = tone(50, 330)
        await npc_turn(pub, s, "alex-1", reply)
        await fake.wait(lambda: len(call.audio()) >= 50, 10)
        assert call.audio() == reply
        times = [t for t, opus in call.heard if opus != b"\xf8\xff\xfe"]
        assert 0.85 < times[-1] - times[0] < 1.3
        heard = await played("alex-1")
        assert heard.complete and heard.text_heard == "Forty gold."
        assert 1 in call.bot_speaking  # the bot said it was speaking

        mute = await fake.interact(gm, "npc", "mute", npc="Greta")
        assert mute.text() == "NPCs: Greta (muted), Tobias"

        # the gateway drops: discord.py resumes, and the session goes on
        await fake.drop_gateway()
        await fake.wait(lambda: fake.resumes == [True], 30)
        assert fake.identifies == 1
        assert "is active" in (await fake.interact(alex, "session", "status")).text()
        more = tone(10, 250)
        await fake.say(alex, more)
        got = await heard_in(10)
        assert [g[1] for g in got] == more
        assert [g[2] for g in got] == list(range(got[0][2], got[0][2] + 10))
        assert got[0][2] > seqs[-1]  # the sequence goes on

        # the voice server drops the call: discord.py connects anew (new keys, new DAVE group);
        # this time Discord does not say whose SSRC is whose (no op 5): the DAVE keys tell
        fake.speaking_ops = False
        dropped = await fake.drop_voice(4006)
        await fake.wait(lambda: fake.calls[-1] is not dropped and fake.calls[-1].ready.is_set()
                        and fake.calls[-1].bot_address is not None, 30)
        call = fake.call()
        again = tone(10, 260)
        await fake.say(alex, again)
        assert [g[1] for g in await heard_in(10)] == again  # same speaker, sequence goes on
        reply = tone(20, 340)
        await npc_turn(pub, s, "alex-2", reply)
        await fake.wait(lambda: len(call.audio()) >= 20, 10)
        assert call.audio() == reply
        assert "is active" in (await fake.interact(gm, "session", "status")).text()

        # a gateway session that cannot be resumed: the bot identifies anew and keeps voice
        fake.resumable = False
        await fake.drop_gateway()
        await fake.wait(lambda: fake.identifies == 2, 30)
        assert fake.resumes[-1] is False
        await fake.wait(lambda: fake.bot_channel == guild.channel_ids["Tavern"]
                        and any(c.ready.is_set() and not c.closed.is_set() for c in fake.calls),
                        30)
        call = fake.call()
        last = tone(10, 270)
        await fake.say(alex, last)
        assert [g[1] for g in await heard_in(10)] == last
        assert "is active" in (await fake.interact(gm, "session", "status")).text()

        stopped = await fake.interact(gm, "session", "stop")
        assert f"Session `{session}` stopped" in stopped.text()
        await fake.wait(lambda: fake.bot_channel is None and call.closed.is_set(), 15)
        served.clear()  # the stages let go of a stopped session
        for stage in stages:
            stage.poke()
        status = (await fake.interact(gm, "session", "status")).text()
        assert "no session is running" in status

        # thrown out of the channel: the session ends at once, saying why
        for _ in range(50):  # the stopped session ends once the stages and the edge let go
            again = (await fake.interact(gm, "session", "start")).text()
            if "started" in again:
                break
            assert "still ending (its stages are finishing): try again" in again
            await asyncio.sleep(0.2)
        assert "started" in again
        await fake.connected()
        status = (await fake.interact(gm, "session", "status")).text()
        second = SessionSubjects(tenant, re.search(r"Session `([^`]+)`", status).group(1))  # type: ignore[union-attr]
        served.append(f"{second.tenant}.{second.session}")
        ended = await js.subscribe(second.ctl("session.stopped"), ordered_consumer=True,
                                   deliver_policy=DeliverPolicy.ALL)
        kicked_at = time.monotonic()
        await fake.kick()
        event = parse_control((await ended.next_msg(15)).data)
        assert isinstance(event, SessionStopped)
        assert "disconnected from the voice channel" in event.reason
        assert time.monotonic() - kicked_at < 5
        for _ in range(25):  # session-control tells the stop, then records it
            status = (await fake.interact(gm, "session", "status")).text()
            if "no session is running" in status:
                break
            await asyncio.sleep(0.2)
        assert "no session is running" in status
        assert fake.unexpected == []
    finally:
        for stage in stages:
            await stage.stop()
        await asyncio.gather(*beats, return_exceptions=True)
        proc.stop()
        await fake.stop()
    log = proc.log_path.read_text()
    assert token not in log
    assert log.count("session ending: voice lost") == 1  # the kick, and nothing before
