"""The bus's users and permissions (glyphoxa_bus.auth) on a real nats-server: a tenant's edge
cannot read, write or consume another tenant's subjects nor read any stream directly, and a
stage cannot administer or read streams directly, while each still does its own part.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from glyphoxa_bus.auth import (
    ACCOUNT,
    SERVICES,
    hash_password,
    inbox_prefix,
    new_password,
    server_auth_config,
    service_permissions,
    tenant_edge_permissions,
    tenant_edge_user,
)
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.streams import CONTROL, MEDIA, WORK, claims_consumer_config
from glyphoxa_cli.processes import NatsServer, nats_server_binary

pytestmark = pytest.mark.integration

TENANTS = ("acme", "brine")


class Passwords(dict):
    """The users' passwords, never shown in a test report."""

    def __repr__(self) -> str:
        return f"<{len(self)} passwords>"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("nats-auth")
    passwords = Passwords({name: new_password() for name in
                           (*SERVICES, *(tenant_edge_user(t) for t in TENANTS))})
    users = {name: (hash_password(passwords[name], rounds=4),
                    service_permissions(name) if name in SERVICES
                    else tenant_edge_permissions(name.removeprefix("edge-")))
             for name in passwords}
    config = home / "nats.conf"
    config.write_text(server_auth_config(users))
    server = NatsServer(home / "store", config=config).start()
    try:
        yield server, passwords
    finally:
        server.stop()


def test_the_generated_configuration_is_valid(secured, tmp_path):
    import subprocess

    server, _ = secured
    assert server.config is not None
    done = subprocess.run([nats_server_binary(), "-t", "-c", str(server.config)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = server.config.read_text()
    assert ACCOUNT in text and "$2a$" in text
    _, passwords = secured
    assert not [p for p in passwords.values() if p in text], "a password in the clear"


class Client:
    """A raw nats.py client logged in as ``user``, collecting the server's refusals."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: nats.NATS | None = None

    async def login(self, url: str, user: str, password: str) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(url, user=user, password=password, error_cb=on_error,
                                     inbox_prefix=inbox_prefix(user), allow_reconnect=False)
        return self

    async def refused(self, what: str, timeout_s: float = 3.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if any("permissions violation" in e.lower() and what.lower() in e.lower()
                   for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False


async def login(server, passwords, user: str) -> Client:  # type: ignore[no-untyped-def]
    return await Client().login(server.url, user, passwords[user])


@pytest.fixture
async def declared(secured):  # type: ignore[no-untyped-def]
    """The streams, declared by session-control (the only user allowed to)."""
    server, passwords = secured
    nc = await connect(BusSettings(url=server.url, user="session-control",
                                   password=passwords["session-control"]), "pytest-control")
    yield nc
    await nc.close()


async def test_a_wrong_password_is_refused(secured):
    server, _ = secured
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(server.url, user="vad", password="not-it", allow_reconnect=False,
                           max_reconnect_attempts=0)


async def test_a_tenant_edge_cannot_touch_another_tenant(secured, declared):
    server, passwords = secured
    acme = await login(server, passwords, "edge-acme")
    assert acme.nc is not None
    try:
        # B's subjects: no subscribing, no publishing
        await acme.nc.subscribe("glx.brine.>")
        assert await acme.refused('Subscription to "glx.brine.>"')
        await acme.nc.publish("glx.brine.s1.audio.in.robin", b"x")
        assert await acme.refused('Publish to "glx.brine.s1.audio.in.robin"')
        # a consumer on B's subjects, whichever way it is asked for
        for subject in (f"$JS.API.CONSUMER.CREATE.{MEDIA}.c1.glx.brine.>",
                        f"$JS.API.CONSUMER.CREATE.{MEDIA}",
                        f"$JS.API.CONSUMER.DURABLE.CREATE.{MEDIA}.c1"):
            with pytest.raises(NatsTimeout):
                await acme.nc.request(subject, b"{}", timeout=0.5)
            assert await acme.refused(f'Publish to "{subject}"')
        # any stream read directly
        for subject in (f"$JS.API.STREAM.MSG.GET.{MEDIA}", f"$JS.API.DIRECT.GET.{CONTROL}",
                        f"$JS.API.STREAM.INFO.{CONTROL}"):
            with pytest.raises(NatsTimeout):
                await acme.nc.request(subject, b'{"seq": 1}', timeout=0.5)
            assert await acme.refused(f'Publish to "{subject}"')
        # session-control's API only under its own name: no posing as the shared edge, or as
        # a principal-less caller (session-control then keeps it to acme: test_gm_commands)
        for subject in ("glxapi.session.stop.discord-edge", "glxapi.session.stop.edge-brine",
                        "glxapi.session.stop"):
            with pytest.raises(NatsTimeout):
                await acme.nc.request(subject, b"{}", timeout=0.5)
            assert await acme.refused(f'Publish to "{subject}"')
        # another user's inbox
        await acme.nc.subscribe("_INBOX_vad.>")
        assert await acme.refused('Subscription to "_INBOX_vad.>"')
    finally:
        await acme.nc.close()


async def test_a_tenant_edge_does_its_own_part(secured, declared):
    """Publishes audio into the stream (acked), and reads its own control events through a
    consumer whose filter the create request names; a body that names another tenant's
    filter under its own subject is refused by the server."""
    server, passwords = secured
    acme = await login(server, passwords, "edge-acme")
    assert acme.nc is not None
    js = acme.nc.jetstream()
    try:
        ack = await js.publish("glx.acme.s1.audio.in.robin", b"opus")
        assert ack.stream == MEDIA
        await declared.jetstream().publish("glx.acme.s1.ctl.npc.mute", b"{}")
        config = {"stream_name": CONTROL, "config": {
            "name": "acme-view", "filter_subject": "glx.acme.>", "deliver_policy": "all",
            "ack_policy": "none", "deliver_subject": f"{inbox_prefix('edge-acme')}.view"}}
        got: asyncio.Queue = asyncio.Queue()
        await acme.nc.subscribe(f"{inbox_prefix('edge-acme')}.view", cb=got.put)
        reply = await acme.nc.request(f"$JS.API.CONSUMER.CREATE.{CONTROL}.acme-view.glx.acme.>",
                                      json.dumps(config).encode(), timeout=3)
        assert "error" not in json.loads(reply.data), reply.data
        msg = await asyncio.wait_for(got.get(), 5)
        assert msg.subject == "glx.acme.s1.ctl.npc.mute"
        forged = {**config, "config": {**config["config"], "name": "acme-forged",
                                       "filter_subject": "glx.brine.>"}}
        reply = await acme.nc.request(
            f"$JS.API.CONSUMER.CREATE.{CONTROL}.acme-forged.glx.acme.>",
            json.dumps(forged).encode(), timeout=3)
        assert "error" in json.loads(reply.data), reply.data
        assert not await acme.refused("glx.acme", timeout_s=0.2)
    finally:
        await acme.nc.close()


async def test_a_stage_takes_claims_but_cannot_administer_or_read_streams(secured, declared):
    server, passwords = secured
    vad = await login(server, passwords, "vad")
    assert vad.nc is not None
    js = vad.nc.jetstream()
    try:
        await js.add_consumer(WORK, claims_consumer_config("vad", 10))
        await declared.jetstream().publish("glxwork.vad.acme.s1", b"")
        psub = await js.pull_subscribe_bind("claims-vad", stream=WORK)
        [claim] = await psub.fetch(1, timeout=3)
        assert claim.subject == "glxwork.vad.acme.s1"
        await claim.ack_sync()
        # stt's claims, stream administration, direct reads: refused
        for subject in (f"$JS.API.CONSUMER.MSG.NEXT.{WORK}.claims-stt",
                        f"$JS.API.STREAM.DELETE.{MEDIA}", f"$JS.API.STREAM.PURGE.{CONTROL}",
                        f"$JS.API.STREAM.MSG.GET.{CONTROL}", f"$JS.API.DIRECT.GET.{MEDIA}"):
            with pytest.raises(NatsTimeout):
                await vad.nc.request(subject, b"{}", timeout=0.5)
            assert await vad.refused(f'Publish to "{subject}"')
        # a kind of event it does not make
        await vad.nc.publish("glx.acme.s1.reply.greta", b"{}")
        assert await vad.refused('Publish to "glx.acme.s1.reply.greta"')
    finally:
        await vad.nc.close()


def test_every_service_has_a_user_and_no_service_may_read_streams_directly():
    for service in SERVICES:
        perms = service_permissions(service).as_config()
        allowed = perms["publish"]["allow"]  # type: ignore[index]
        assert allowed, service
        if service != "session-control":
            denied = perms["publish"]["deny"]  # type: ignore[index]
            assert "$JS.API.DIRECT.GET.>" in denied and "$JS.API.STREAM.MSG.GET.>" in denied
    with pytest.raises(ValueError):
        service_permissions("intruder")
    with pytest.raises(ValueError):
        tenant_edge_permissions("bad.tenant")


async def test_session_control_answers_a_tenant_edge_for_its_tenant_only(secured, declared,
                                                                         pg_dsn, tmp_path):
    """session-control logged in as its user, asked through the bus by acme's own edge and
    by a stage: the principal in the subject decides, the body cannot change it."""
    from glyphoxa_bus.connection import principal
    from glyphoxa_events.api import ApiReply, FindSession, SecretsReply
    from glyphoxa_events.subjects import api_subject
    from tests.support.control import ControlProcess

    server, passwords = secured
    control = ControlProcess(server.url, pg_dsn, tmp_path / "sc.log", env={
        "NATS_USER": "session-control", "NATS_PASSWORD": passwords["session-control"]}).start()
    try:
        for tenant in TENANTS:
            await (await control.new_tenant(tenant)).close()
        acme = await connect(BusSettings(url=server.url, user="edge-acme",
                                         password=passwords["edge-acme"]), "pytest-acme")
        stt = await connect(BusSettings(url=server.url, user="stt",
                                        password=passwords["stt"]), "pytest-stt")
        try:
            assert principal(acme) == "edge-acme"

            async def find(nc, tenant: str) -> ApiReply:  # type: ignore[no-untyped-def]
                msg = await nc.request(api_subject("session.find", principal(nc)),
                                       FindSession(tenant=tenant, guild_id="1").model_dump_json()
                                       .encode(), timeout=5)
                return ApiReply.model_validate_json(msg.data)

            mine = await find(acme, "acme")
            assert mine.error == "no session is running in this server: /session start begins one"
            theirs = await find(acme, "brine")
            assert not theirs.ok and theirs.error == "'edge-acme' may not use session.find " \
                "for tenant 'brine'"
            with pytest.raises(NatsTimeout):  # the server already keeps a stage to its verb
                await find(stt, "acme")
            msg = await stt.request(api_subject("secrets.get", "stt"),
                                    b'{"tenant": "acme", "names": ["gemini"], "stage": "stt"}',
                                    timeout=5)
            answer = SecretsReply.model_validate_json(msg.data)
            assert answer.ok or "secret delivery is off" in (answer.error or ""), answer
        finally:
            await acme.close()
            await stt.close()
        assert "refused session.find request" in control.log_path.read_text()
        assert passwords["session-control"] not in control.log_path.read_text()
    finally:
        control.stop()


async def test_a_tenant_edges_bridge_and_heartbeat_work_on_its_own_credentials(secured, declared):
    """discord-edge's session bridge logged in as ``edge-acme``: it follows its session's NPC
    audio and control events (named consumers, created with the filter in the request), plays
    a turn and says what was heard, publishes a player's audio; its heartbeat goes under its
    own name and is believed for acme's sessions only."""
    import time

    from glyphoxa_bus.heartbeat import EDGE_ROLE, HeartbeatPublisher, HeartbeatView
    from glyphoxa_bus.publisher import Publisher
    from glyphoxa_discord_edge.bridge import SessionBridge
    from glyphoxa_events import headers as H
    from glyphoxa_events.models import AudioDone, Outcome, Played, TurnEnded, parse_control
    from glyphoxa_events.subjects import SessionSubjects
    from tests.support.service import wait_for

    server, passwords = secured
    s = SessionSubjects("acme", "bridged")
    edge = await connect(BusSettings(url=server.url, user="edge-acme",
                                     password=passwords["edge-acme"]), "pytest-edge-acme")
    errors: list[str] = []
    edge._error_cb = lambda exc: errors.append(str(exc))  # type: ignore[attr-defined]  # noqa: SLF001

    class Voice:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def send(self, opus: bytes) -> None:
            if opus != b"\xf8\xff\xfe":
                self.sent.append(opus)

    async def stopped(reason: str) -> None:
        pass

    voice, seen = Voice(), asyncio.Queue()
    bridge = SessionBridge(edge, Publisher(edge), s, voice, {7: "Robin"}.get, on_stopped=stopped)
    control = Publisher(declared)
    beat = HeartbeatPublisher(edge, EDGE_ROLE, "discord-home-1", lambda: [f"acme.{s.session}"],
                              interval_s=0.5, ttl_s=3, owner="edge-acme")
    forged = HeartbeatPublisher(edge, EDGE_ROLE, "discord-home-2", lambda: ["brine.theirs"],
                                interval_s=0.5, ttl_s=3, owner="edge-acme")
    view = await HeartbeatView(declared.jetstream(), ttl_s=3).start()
    ctl_sub = await declared.jetstream().subscribe(s.ctl(">"), ordered_consumer=True,
                                                   cb=seen.put)
    ins = await declared.jetstream().subscribe(s.audio_in("*"), ordered_consumer=True)
    tasks = [asyncio.create_task(beat.run()), asyncio.create_task(forged.run())]
    try:
        await bridge.start()
        bridge.packet(7, 100, 0, b"opus-in", time.time_ns())
        assert (await ins.next_msg(5)).data == b"opus-in"
        await control.publish_event(s.ctl("turn"), TurnEnded(
            turn_id="robin-1", speaker="robin", transcript="Greta?", npc="greta",
            outcome=Outcome.answered, reply_text="Forty gold."), "ctl:turn:robin-1")
        for n in range(5):
            await control.publish(s.audio_out("greta"), b"out%d" % n, f"aout:robin-1:{n}",
                                  {H.TURN: "robin-1", H.SEQ: str(n),
                                   H.PUBLISHED_NS: str(time.time_ns())})
        await control.publish_event(s.ctl("audio.done"), AudioDone(
            turn_id="robin-1", npc="greta", frames=5), "ctl:done:robin-1")
        await wait_for(lambda: len(voice.sent) == 5, 5)
        while not isinstance(event := parse_control((await asyncio.wait_for(seen.get(), 5)).data),
                             Played):
            pass
        assert event.turn_id == "robin-1" and event.complete  # published by the tenant's edge

        def believed() -> list[str]:
            return [ref for b in view.beats() for ref in b.sessions]
        await wait_for(lambda: believed() == [f"acme.{s.session}"], 5)
        await asyncio.sleep(1.0)  # the forged one has been put meanwhile, and is still not believed
        assert believed() == [f"acme.{s.session}"]
        # under the shared edge's keys: refused by the server
        await edge.publish("$KV.glx_heartbeats.edge.discord-home-3", b"{}")
        await wait_for(lambda: any("permissions violation" in e.lower()
                                   and "glx_heartbeats.edge.discord" in e for e in errors), 5)
        assert not [e for e in errors if "CONSUMER.CREATE" in e], errors
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        await view.stop()
        await ctl_sub.unsubscribe()
        await edge.close()


async def test_a_new_tenant_edge_logs_in_after_a_reload_and_nobody_is_dropped(tmp_path):
    """Adding ``edge-<tenant>`` is a new ``auth.conf`` and a reload (SIGHUP, what
    ``nats-server --signal reload`` sends): the new login works at once and the services'
    connections stay up through it."""
    import signal

    from glyphoxa_bus.auth import server_config_for

    passwords = Passwords({name: new_password() for name in SERVICES})
    config = tmp_path / "auth.conf"
    config.write_text(server_config_for(dict(passwords)))
    server = NatsServer(tmp_path / "store", config=config).start()
    try:
        vad = await login(server, passwords, "vad")
        assert vad.nc is not None
        drops: list[str] = []

        async def dropped() -> None:
            drops.append("disconnected")
        vad.nc._disconnected_cb = dropped  # noqa: SLF001
        passwords["edge-newt"] = new_password()
        with pytest.raises(Exception, match="(?i)authorization"):
            await login(server, passwords, "edge-newt")
        config.write_text(server_config_for(dict(passwords)))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            try:
                newt = await login(server, passwords, "edge-newt")
                break
            except Exception:  # noqa: BLE001 - not reloaded yet
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("edge-newt was still refused 5 s after the reload")
        assert newt.nc is not None
        await newt.nc.close()
        await vad.nc.flush(timeout=2)
        assert vad.nc.is_connected and not drops
        await vad.nc.close()
    finally:
        server.stop()
