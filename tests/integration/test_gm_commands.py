"""What discord-edge's slash commands ask of session-control (``glxapi.session.find``,
``glxapi.npc.{list,mute,speak}``, and start/stop with a caller), through a real
session-control process on real PostgreSQL and NATS: who counts as the GM, which guilds
may, and what reaches the session's control subjects."""

from __future__ import annotations

import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_bus.connection import principal
from glyphoxa_events.api import (
    ApiReply,
    Caller,
    FindSession,
    ListNpcs,
    MuteNpc,
    NpcsReply,
    SpeakNpc,
    StartSession,
    StopSession,
)
from glyphoxa_events.models import Flush, NpcMute, NpcSpeak, parse_control
from glyphoxa_events.subjects import SessionSubjects, api_subject
from tests.support.control import EXAMPLE_CAMPAIGN, ControlProcess, module_control

pytestmark = pytest.mark.integration

GUILD, OTHER_GUILD, CHANNEL = "111111111111111111", "222222222222222222", "333333333333333333"
GM = Caller(guild_id=GUILD, user_id="42", roles=("999", "Game Master"))
PLAYER = Caller(guild_id=GUILD, user_id="43", roles=("Players",))
ADMIN = Caller(guild_id=GUILD, user_id="44", manages_guild=True)
STRANGER = Caller(guild_id=OTHER_GUILD, user_id="45", roles=("Game Master",), manages_guild=True)


control, nc = module_control("gm")


async def call(nc, verb: str, body, reply=ApiReply):  # type: ignore[no-untyped-def]
    msg = await nc.request(api_subject(verb, principal(nc)), body.model_dump_json().encode(), timeout=5)
    return reply.model_validate_json(msg.data)


async def setup_tenant(control: ControlProcess, tenant: str) -> None:
    client = await control.new_tenant(tenant, EXAMPLE_CAMPAIGN + "gm_role: game master\n",
                                      allowed_guild_ids=[GUILD])
    await client.close()


def start(tenant: str, caller: Caller | None) -> StartSession:
    return StartSession(tenant=tenant, campaign="forge", edge="discord", guild_id=GUILD,
                        channel_id=CHANNEL, caller=caller)




async def test_only_the_gm_starts_and_stops_and_only_in_allowed_guilds(nc, tenant, control):
    await setup_tenant(control, tenant)
    refused = await call(nc, "session.start", start(tenant, PLAYER))
    assert not refused.ok and "only the game master may start a session" in refused.error
    assert "'game master'" in refused.error
    admin = await call(nc, "session.start", start(tenant, ADMIN))  # the role is the rule
    assert not admin.ok and "only the game master" in admin.error
    foreign = await call(nc, "session.start", StartSession(
        tenant=tenant, campaign="forge", edge="discord", guild_id=OTHER_GUILD,
        channel_id=CHANNEL, caller=STRANGER))
    assert not foreign.ok and "not allowed for tenant" in foreign.error

    ok = await call(nc, "session.start", start(tenant, GM))  # role names match case-blind
    assert ok.ok and ok.session is not None and ok.session.state == "active", ok
    sid = ok.session.session
    found = await call(nc, "session.find", FindSession(tenant=tenant, guild_id=GUILD))
    assert found.ok and found.session is not None and found.session.session == sid
    none = await call(nc, "session.find", FindSession(tenant=tenant, guild_id=OTHER_GUILD))
    assert not none.ok and "no session is running in this server" in none.error

    for caller in (PLAYER, STRANGER):
        no = await call(nc, "session.stop", StopSession(tenant=tenant, session=sid, caller=caller))
        assert not no.ok, caller
    stopped = await call(nc, "session.stop", StopSession(tenant=tenant, session=sid,
                                                         reason="end of the evening", caller=GM))
    assert stopped.ok and stopped.session is not None
    assert stopped.session.state in ("ending", "ended")
    gone = await call(nc, "session.find", FindSession(tenant=tenant, guild_id=GUILD))
    assert not gone.ok


async def test_without_a_gm_role_members_who_manage_the_server_are_the_gm(nc, tenant, control):
    client = await control.new_tenant(tenant, allowed_guild_ids=[GUILD])
    await client.close()
    assert not (await call(nc, "session.start", start(tenant, GM))).ok
    reply = await call(nc, "session.start", start(tenant, ADMIN))
    assert reply.ok, reply
    assert reply.session is not None
    await call(nc, "session.stop", StopSession(tenant=tenant, session=reply.session.session))


async def test_mute_unmute_and_speak_reach_the_session_and_the_npc_list(nc, tenant, control):
    await setup_tenant(control, tenant)
    reply = await call(nc, "session.start", start(tenant, GM))
    assert reply.session is not None
    sid = reply.session.session
    sub = await nc.jetstream().subscribe(SessionSubjects(tenant, sid).ctl("npc.>"),
                                         ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    flushes = await nc.jetstream().subscribe(SessionSubjects(tenant, sid).ctl("flush"),
                                             ordered_consumer=True,
                                             deliver_policy=DeliverPolicy.ALL)

    listed = await call(nc, "npc.list", ListNpcs(tenant=tenant, session=sid), NpcsReply)
    assert [(n.token, n.name, n.muted) for n in listed.npcs] == [
        ("greta", "Greta", False), ("tobias", "Tobias", False)]

    player = await call(nc, "npc.mute", MuteNpc(tenant=tenant, session=sid, npc="greta",
                                                muted=True, caller=PLAYER), NpcsReply)
    assert not player.ok and "only the game master may mute NPCs" in player.error
    muted = await call(nc, "npc.mute", MuteNpc(tenant=tenant, session=sid, npc="greta",
                                               muted=True, caller=GM), NpcsReply)
    assert muted.ok and [n.muted for n in muted.npcs] == [True, False]
    event = parse_control((await sub.next_msg(3)).data)
    assert event == NpcMute(npc="greta", muted=True)
    flush = parse_control((await flushes.next_msg(3)).data)
    assert isinstance(flush, Flush) and flush.npc == "greta"  # her audio stops too

    everyone = await call(nc, "npc.mute", MuteNpc(tenant=tenant, session=sid, npc="*",
                                                  muted=True, caller=GM), NpcsReply)
    assert [n.muted for n in everyone.npcs] == [True, True]
    assert parse_control((await sub.next_msg(3)).data) == NpcMute(npc="*", muted=True)
    back = await call(nc, "npc.mute", MuteNpc(tenant=tenant, session=sid, npc="*",
                                              muted=False, caller=GM), NpcsReply)
    assert [n.muted for n in back.npcs] == [False, False]
    assert parse_control((await sub.next_msg(3)).data) == NpcMute(npc="*", muted=False)
    unknown = await call(nc, "npc.mute", MuteNpc(tenant=tenant, session=sid, npc="bruno",
                                                 muted=True, caller=GM), NpcsReply)
    assert not unknown.ok and "no NPC 'bruno'" in unknown.error and "greta" in unknown.error

    spoken = await call(nc, "npc.speak", SpeakNpc(tenant=tenant, session=sid, npc="tobias",
                                                  text="Welcome, travellers!", caller=GM))
    assert spoken.ok, spoken
    line = parse_control((await sub.next_msg(3)).data)
    assert isinstance(line, NpcSpeak) and line.npc == "tobias"
    assert line.text == "Welcome, travellers!" and line.request_id.startswith("gm-")
    puppet = await call(nc, "npc.speak", SpeakNpc(tenant=tenant, session=sid, npc="tobias",
                                                  text="I am the GM now.", caller=PLAYER))
    assert not puppet.ok and "only the game master may speak as an NPC" in puppet.error
    foreign = await call(nc, "npc.speak", SpeakNpc(tenant=tenant, session=sid, npc="tobias",
                                                   text="Hi.", caller=STRANGER))
    assert not foreign.ok and "not allowed" in foreign.error

    await call(nc, "session.stop", StopSession(tenant=tenant, session=sid, caller=GM))
    late = await call(nc, "npc.speak", SpeakNpc(tenant=tenant, session=sid, npc="tobias",
                                                text="Too late.", caller=GM))
    assert not late.ok and "not running" in late.error
    await sub.unsubscribe()
    await flushes.unsubscribe()


async def test_the_admin_api_mutes_and_puppets_npcs_too(nc, tenant, control):
    """The same for a GM's own tools, with the tenant's API key (docs/admin-api.md)."""
    from glyphoxa_cli.admin import AdminError

    client = await control.new_tenant(tenant)
    async with client:
        session = await client.call("POST", "/v1/sessions", json={"campaign": "forge"})
        sid = session["id"]
        sub = await nc.jetstream().subscribe(SessionSubjects(tenant, sid).ctl("npc.>"),
                                             ordered_consumer=True,
                                             deliver_policy=DeliverPolicy.ALL)
        muted = await client.call("POST", f"/v1/sessions/{sid}/npcs/greta/mute")
        assert [(n["token"], n["muted"]) for n in muted] == [("greta", True), ("tobias", False)]
        assert parse_control((await sub.next_msg(3)).data) == NpcMute(npc="greta", muted=True)
        everyone = await client.call("POST", f"/v1/sessions/{sid}/npcs/*/unmute")
        assert not any(n["muted"] for n in everyone)
        listed = await client.call("GET", f"/v1/sessions/{sid}/npcs")
        assert [n["name"] for n in listed] == ["Greta", "Tobias"]
        await client.call("POST", f"/v1/sessions/{sid}/npcs/tobias/speak",
                          json={"text": "Rooms are two silver."})
        await sub.next_msg(3)
        line = parse_control((await sub.next_msg(3)).data)
        assert isinstance(line, NpcSpeak) and line.text == "Rooms are two silver."
        with pytest.raises(AdminError) as unknown:
            await client.call("POST", f"/v1/sessions/{sid}/npcs/bruno/mute")
        assert unknown.value.status == 404 and "no NPC 'bruno'" in unknown.value.message
        with pytest.raises(AdminError) as empty:
            await client.call("POST", f"/v1/sessions/{sid}/npcs/tobias/speak", json={"text": ""})
        assert empty.value.status == 422
        await client.call("POST", f"/v1/sessions/{sid}/stop")
        with pytest.raises(AdminError) as ended:
            await client.call("POST", f"/v1/sessions/{sid}/npcs/greta/mute")
        assert ended.value.status == 409
        await sub.unsubscribe()


async def test_the_gm_teaches_an_npc_and_searches_what_was_said(nc, tenant, control):
    """``/npc teach`` and ``/recall`` (glxapi.npc.teach, glxapi.campaign.search), and the
    admin API's facts route telling a live session at once."""
    import asyncio

    from glyphoxa_events.api import SearchCampaign, SearchReply, TaughtReply, TeachNpc
    from glyphoxa_events.models import NpcForgot, NpcTaught, Outcome, TurnEnded

    await setup_tenant(control, tenant)
    reply = await call(nc, "session.start", start(tenant, GM))
    assert reply.session is not None
    sid = reply.session.session
    subjects = SessionSubjects(tenant, sid)
    sub = await nc.jetstream().subscribe(subjects.ctl("npc.taught"), ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)

    def teach(npc: str, text: str, caller: Caller) -> TeachNpc:
        return TeachNpc(tenant=tenant, session=sid, npc=npc, text=text, caller=caller)

    refused = await call(nc, "npc.teach", teach("greta", "The bridge is out.", PLAYER), TaughtReply)
    assert not refused.ok and "only the game master may teach an NPC" in refused.error
    unknown = await call(nc, "npc.teach", teach("bruno", "Hi.", GM), TaughtReply)
    assert not unknown.ok and "no NPC 'bruno'" in unknown.error
    taught = await call(nc, "npc.teach", teach("greta", "The bridge is out.", GM), TaughtReply)
    assert taught.ok and taught.fact_id
    event = parse_control((await sub.next_msg(3)).data)
    assert event == NpcTaught(npc="greta", fact_id=taught.fact_id, text="The bridge is out.")

    client = await control.new_tenant(f"{tenant}x", None)  # another tenant sees nothing
    await client.close()
    async with control.operator() as op:
        key = await op.create_api_key(tenant, "gm-tools")
    from glyphoxa_cli.admin import AdminClient
    async with AdminClient(control.api_url, key) as gm_tools:
        fact = await gm_tools.call("POST", "/v1/campaigns/forge/npcs/tobias/facts",
                                   json={"text": "Rooms are two silver."})
        told = parse_control((await sub.next_msg(3)).data)  # the live session hears it at once
        assert told == NpcTaught(npc="tobias", fact_id=str(fact["id"]), text="Rooms are two silver.")
        facts = await gm_tools.call("GET", "/v1/campaigns/forge/npcs/greta/facts")
        assert [f["text"] for f in facts] == ["The bridge is out."]

        # corrected and deleted: the live session forgets the old text at once
        forgot = await nc.jetstream().subscribe(subjects.ctl("npc.forgot"),
                                                ordered_consumer=True,
                                                deliver_policy=DeliverPolicy.ALL)
        await gm_tools.call("PATCH", f"/v1/campaigns/forge/memories/{fact['id']}",
                            json={"text": "Rooms are three silver."})
        assert parse_control((await forgot.next_msg(3)).data) == NpcForgot(
            npc="tobias", fact_id=str(fact["id"]), text="Rooms are two silver.")
        assert parse_control((await sub.next_msg(3)).data) == NpcTaught(
            npc="tobias", fact_id=str(fact["id"]), text="Rooms are three silver.")
        # corrected back at once: told again, not dropped as a repeat of the first teach
        await gm_tools.call("PATCH", f"/v1/campaigns/forge/memories/{fact['id']}",
                            json={"text": "Rooms are two silver."})
        assert parse_control((await forgot.next_msg(3)).data) == NpcForgot(
            npc="tobias", fact_id=str(fact["id"]), text="Rooms are three silver.")
        assert parse_control((await sub.next_msg(3)).data) == NpcTaught(
            npc="tobias", fact_id=str(fact["id"]), text="Rooms are two silver.")
        await gm_tools.call("DELETE", f"/v1/campaigns/forge/npcs/greta/facts/{taught.fact_id}")
        assert parse_control((await forgot.next_msg(3)).data) == NpcForgot(
            npc="greta", fact_id=taught.fact_id, text="The bridge is out.")
        await forgot.unsubscribe()

    line = TurnEnded(turn_id="sam-1", speaker="sam", transcript="Greta, we will hunt the red dragon.",
                     npc="greta", outcome=Outcome.answered, reply_text="Then take my spear.",
                     memories=("41", "7"))
    await nc.jetstream().publish(subjects.ctl("turn"), line.to_bytes(),
                                 headers={"Nats-Msg-Id": f"ctl:{tenant}.{sid}:turn:sam-1"})

    def search(caller: Caller) -> SearchCampaign:
        return SearchCampaign(tenant=tenant, session=sid, q="dragon", caller=caller)

    for _ in range(50):  # the recorder writes it within a moment
        found = await call(nc, "campaign.search", search(GM), SearchReply)
        if found.hits:
            break
        await asyncio.sleep(0.1)
    assert found.ok and [(h.session, h.role, h.speaker, h.npc, h.text) for h in found.hits] == [
        (sid, "player", "sam", "greta", "Greta, we will hunt the red dragon.")]
    async with AdminClient(control.api_url, key) as gm_tools:  # kept with the turn for good
        [turn] = await gm_tools.call("GET", f"/v1/sessions/{sid}/turns")
        assert turn["turn_id"] == "sam-1" and turn["memories"] == ["41", "7"]
    nosy = await call(nc, "campaign.search", search(PLAYER), SearchReply)
    assert not nosy.ok and "only the game master may search" in nosy.error
    await call(nc, "session.stop", StopSession(tenant=tenant, session=sid, caller=GM))
    late = await call(nc, "npc.teach", teach("greta", "Too late.", GM), TaughtReply)
    assert not late.ok and "not running" in late.error
    await sub.unsubscribe()
