"""A tenant's own discord-edge (a self-hosted edge: docs/adr/0006) through its real entry
point, on a nats-server with authorization, logged in as ``edge-<tenant>`` with only the
bot key derived for it: it gets its tenant's bot and no other, runs a session against the
local Discord (the GM's ``/session start``, the voice call, a player's words on
``audio.in``, an NPC's reply played and reported heard) without a single permission
refused, and its heartbeat is believed for its tenant's session."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_bus.auth import (
    OPERATOR,
    SERVICES,
    hash_password,
    new_password,
    permissions_of,
    server_auth_config,
    tenant_edge_key,
    tenant_edge_user,
)
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.heartbeat import HeartbeatPublisher, HeartbeatView
from glyphoxa_bus.publisher import Publisher
from glyphoxa_cli.processes import NatsServer, ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import Played, parse_control
from glyphoxa_events.subjects import STAGES, SessionSubjects
from glyphoxa_session_control.crypto import new_secret_key
from tests.integration.test_edge_discord import npc_turn, tone
from tests.support.control import EXAMPLE_CAMPAIGN, ControlProcess
from tests.support.fakes.discord import FakeDiscord, Guild, Member

pytestmark = pytest.mark.integration


class Passwords(dict):
    def __repr__(self) -> str:
        return f"<{len(self)} passwords>"


async def test_a_tenants_own_edge_runs_its_table_on_its_own_login(pg_dsn, tmp_path):
    tenant, other = "own" + uuid.uuid4().hex[:6], "oth" + uuid.uuid4().hex[:6]
    edge_user, edge_name = tenant_edge_user(tenant), "home" + uuid.uuid4().hex[:4]
    passwords = Passwords({name: new_password() for name in (*SERVICES, OPERATOR, edge_user)})
    config = tmp_path / "auth.conf"
    config.write_text(server_auth_config({name: (hash_password(pw), permissions_of(name))
                                          for name, pw in passwords.items()}))
    server = NatsServer(tmp_path / "nats", config=config).start()
    edge_key = new_secret_key()
    control = ControlProcess(server.url, pg_dsn, tmp_path / "sc.log", env={
        "NATS_USER": "session-control", "NATS_PASSWORD": passwords["session-control"],
        "NATS_EDGE_KEY": edge_key}).start()
    op = await connect(BusSettings(url=server.url, user=OPERATOR, password=passwords[OPERATOR]),
                       "pytest-operator")
    proc: ServiceProcess | None = None
    fake: FakeDiscord | None = None
    served: list[str] = []  # the stages hold the session, as vad, stt, brain and tts would
    stages = [HeartbeatPublisher(op, stage, f"test-{stage}", lambda: served, interval_s=1.0)
              for stage in STAGES]
    beats = [asyncio.create_task(stage.run()) for stage in stages]
    view = await HeartbeatView(op.jetstream()).start()
    try:
        gm, alex = Member("Mira", roles=["GM"], voice="Tavern"), Member("Alex", voice="Tavern")
        guild = Guild("Home Table", [gm, alex], voice_channels=["Tavern"])
        token = "MTA" + uuid.uuid4().hex + ".Gy." + uuid.uuid4().hex
        client = await control.new_tenant(tenant, EXAMPLE_CAMPAIGN + "gm_role: GM\n",
                                          bot_token=token, allowed_guild_ids=[str(guild.id)],
                                          discord_edge=edge_name)
        await client.close()
        other_token = "MTA" + uuid.uuid4().hex + ".Gz." + uuid.uuid4().hex
        await (await control.new_tenant(other, None, bot_token=other_token,
                                        discord_edge=edge_name)).close()
        fake = await FakeDiscord(token, guild, tmp_path).start()
        proc = ServiceProcess("discord-edge", {
            "NATS_URL": server.url, "NATS_USER": edge_user, "NATS_PASSWORD": passwords[edge_user],
            "NATS_EDGE_KEY": tenant_edge_key(edge_key, edge_user),
            "DISCORD_EDGE_NAME": edge_name, **fake.edge_env()}, tmp_path / "edge.log").start()
        proc.wait_ready(30)
        await fake.ready()

        started = await fake.interact(gm, "session", "start")
        assert "started (campaign forge) in #Tavern" in started.text()
        call = await fake.connected()
        status = (await fake.interact(alex, "session", "status")).text()
        session = re.search(r"Session `([^`]+)` is active", status).group(1)  # type: ignore[union-attr]
        s = SessionSubjects(tenant, session)
        served.append(f"{tenant}.{session}")
        for stage in stages:
            stage.poke()
        js = op.jetstream()
        ins = await js.subscribe(s.audio_in("*"), ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)
        ctl = await js.subscribe(s.ctl(">"), ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)

        words = tone(10, 220)  # a player speaks
        await fake.say(alex, words)
        got = [await ins.next_msg(10) for _ in range(10)]
        assert [m.data for m in got] == words and H.SEQ in (got[0].headers or {})

        reply = tone(20, 330)  # Greta answers
        await npc_turn(Publisher(op), s, "alex-1", reply)
        await fake.wait(lambda: len(call.audio()) >= 20, 10)
        assert call.audio() == reply
        while not isinstance(event := parse_control((await ctl.next_msg(10)).data), Played):
            pass
        assert event.turn_id == "alex-1" and event.complete

        # its heartbeat, under its own name, is believed for its tenant's session
        def edge_beats() -> list[str]:
            return [ref for b in view.beats() if b.role == "edge" for ref in b.sessions]
        await fake.wait(lambda: edge_beats() == [f"{tenant}.{session}"], 10)

        await fake.interact(gm, "session", "stop")
        log = proc.log_path.read_text()
        assert "permissions violation" not in log.lower(), log[-2000:]
        assert other not in log  # the other tenant's bot was never given to it
        assert passwords[edge_user] not in log and token not in log
    finally:
        for task in beats:
            task.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        if proc is not None:
            proc.stop()
        if fake is not None:
            await fake.stop()
        await view.stop()
        await op.close()
        control.stop()
        server.stop()
