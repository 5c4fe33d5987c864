"""Each slash command's handler (discord-edge ``Commands``) against a real session-control
process: what the member reads, what session-control records and publishes, and the
permission and guild checks. Discord itself is not needed: the bot's voice side is a
recording stand-in (``Voice``), the caller an ``Invocation``."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_discord_edge.commands import Commands, Invocation, VoiceError
from glyphoxa_discord_edge.control import ControlClient
from glyphoxa_events.models import NpcMute, NpcSpeak, parse_control
from glyphoxa_events.subjects import SessionSubjects
from tests.support.control import EXAMPLE_CAMPAIGN, ControlProcess, module_control

pytestmark = pytest.mark.integration

GUILD, OTHER, VOICE = "111111111111111111", "222222222222222222", "333333333333333333"
GM = Invocation(guild_id=GUILD, user_id="42", roles=("777", "GM"), voice_channel_id=VOICE,
                voice_channel_name="Tavern")
PLAYER = Invocation(guild_id=GUILD, user_id="43", roles=("Players",), voice_channel_id=VOICE)


class Voice:
    """The bot's voice side, recorded: which channels it joined and left."""

    def __init__(self, missing: list[str] | None = None, fail: str = ""):
        self.missing, self.fail = missing or [], fail
        self.joined: list[tuple[str, str, str]] = []
        self.left: list[tuple[str, str]] = []

    def missing_permissions(self, guild_id: str, channel_id: str) -> list[str]:
        return self.missing

    async def join(self, guild_id: str, channel_id: str, session: str) -> None:
        if self.fail:
            raise VoiceError(self.fail)
        self.joined.append((guild_id, channel_id, session))

    async def leave(self, guild_id: str, reason: str) -> None:
        self.left.append((guild_id, reason))


control, nc = module_control("edge-cmd")


async def table(control: ControlProcess, tenant: str, campaigns: int = 1) -> None:
    client = await control.new_tenant(tenant, EXAMPLE_CAMPAIGN + "gm_role: gm\n",
                                      allowed_guild_ids=[GUILD])
    if campaigns > 1:
        await client.import_campaign(EXAMPLE_CAMPAIGN.replace("name: Forge", "name: Harbour"))
    await client.close()


async def test_a_gm_runs_a_whole_session_from_discord(nc, tenant, control):
    await table(control, tenant)
    voice = Voice()
    commands = Commands(ControlClient(nc, tenant), voice)

    assert "no session is running in this server" in await commands.session_status(GM)
    refused = await commands.session_start(PLAYER)
    assert refused.startswith("Could not start a session: only the game master may start")
    assert not voice.joined

    started = await commands.session_start(GM)  # the tenant's only campaign
    assert "started (campaign forge) in #Tavern" in started and "Greta, Tobias" in started
    [(guild, channel, session)] = voice.joined
    assert (guild, channel) == (GUILD, VOICE)
    subjects = SessionSubjects(tenant, session)
    sub = await nc.jetstream().subscribe(subjects.ctl("npc.>"), ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)

    status = await commands.session_status(PLAYER)  # anyone may look
    assert f"Session `{session}` is active (campaign forge)" in status
    assert "NPCs: Greta, Tobias" in status
    assert await commands.npc_list(PLAYER) == "NPCs: Greta, Tobias"

    assert "only the game master may mute NPCs" in await commands.npc_mute(PLAYER, "Greta", True)
    assert await commands.npc_mute(GM, "Greta", True) == "NPCs: Greta (muted), Tobias"
    assert parse_control((await sub.next_msg(3)).data) == NpcMute(npc="greta", muted=True)
    assert await commands.npc_mute(GM, "greta", False) == "NPCs: Greta, Tobias"
    assert await commands.npc_mute_all(GM, True) == "NPCs: Greta (muted), Tobias (muted)"
    assert await commands.npc_mute_all(GM, False) == "NPCs: Greta, Tobias"
    unknown = await commands.npc_mute(GM, "Bruno", True)
    assert "no NPC 'bruno'" in unknown and "greta, tobias" in unknown
    for _ in range(3):
        await sub.next_msg(3)

    assert await commands.npc_speak(GM, "Tobias", "  Welcome, travellers!  ") == (
        "Tobias says: Welcome, travellers!")
    line = parse_control((await sub.next_msg(3)).data)
    assert isinstance(line, NpcSpeak) and (line.npc, line.text) == ("tobias", "Welcome, travellers!")
    assert "only the game master may speak" in await commands.npc_speak(PLAYER, "Tobias", "Hi.")
    assert await commands.npc_speak(GM, "Tobias", "   ") == "Say something: the text is empty."

    assert "only the game master may stop" in await commands.session_stop(PLAYER)
    assert await commands.session_stop(GM) == (
        f"Session `{session}` stopped. The transcript is kept.")
    assert voice.left == [(GUILD, "session stopped")]
    assert "no session is running" in await commands.npc_list(GM)
    await sub.unsubscribe()


async def test_start_says_what_is_missing_before_anything_starts(nc, tenant, control):
    await table(control, tenant, campaigns=2)
    commands = Commands(ControlClient(nc, tenant), Voice(missing=["Connect", "Speak"]))
    answer = await commands.session_start(GM, "forge")
    assert answer == ("I cannot work in #Tavern: I lack the permission(s) Connect, Speak there. "
                      "Ask a server admin to grant them.")
    commands = Commands(ControlClient(nc, tenant), Voice())
    not_in_voice = Invocation(guild_id=GUILD, user_id="42", roles=("GM",))
    assert "Join a voice channel first" in await commands.session_start(not_in_voice)
    dm = Invocation(guild_id=None, user_id="42")
    assert "not in direct messages" in await commands.session_start(dm)
    assert "not in direct messages" in await commands.npc_list(dm)
    which = await commands.session_start(GM)  # two campaigns: which one?
    assert "has 2 campaigns (forge, harbour): name the one to play" in which
    assert "no campaign 'atlantis'" in await commands.session_start(GM, "Atlantis")
    foreign = Invocation(guild_id=OTHER, user_id="42", roles=("GM",), voice_channel_id=VOICE)
    assert "not allowed for tenant" in await commands.session_start(foreign, "forge")


async def test_a_voice_failure_stops_the_session_it_started(nc, tenant, control):
    await table(control, tenant)
    commands = Commands(ControlClient(nc, tenant), Voice(fail="voice handshake timed out"))
    answer = await commands.session_start(GM, "Forge")
    assert answer == ("Could not join #Tavern: voice handshake timed out. "
                      "The session was stopped.")
    assert "no session is running" in await commands.session_status(GM)


async def test_no_session_control_is_a_readable_answer(tmp_path_factory):
    from tests.conftest import _own_nats

    servers = _own_nats(tmp_path_factory)
    url = next(servers)
    client = await nats.connect(url)
    try:
        commands = Commands(ControlClient(client, "tnobody", timeout_s=0.5), Voice())
        answer = await commands.session_status(GM)
        assert answer.startswith("Glyphoxa's control service is not answering")
    finally:
        await client.close()
        next(servers, None)


async def test_a_restarted_edge_takes_its_live_sessions_up_again(nc, tenant, control):
    from unittest.mock import AsyncMock, MagicMock

    from glyphoxa_discord_edge.bot import TenantBot
    from glyphoxa_events.api import Bot

    await table(control, tenant)
    started = await Commands(ControlClient(nc, tenant), Voice()).session_start(GM)
    session = started.split("`")[1]
    bot = TenantBot(Bot(tenant=tenant, token="x" * 30, allowed_guild_ids=(GUILD,)), nc,
                    MagicMock())
    bot.join = AsyncMock()  # type: ignore[method-assign]
    await bot.rejoin([GUILD, OTHER])  # OTHER is not the table's: not even looked at
    bot.join.assert_awaited_once_with(GUILD, VOICE, session)

    bot.join = AsyncMock(side_effect=VoiceError("the voice channel is gone"))  # type: ignore[method-assign]
    await bot.rejoin([GUILD])
    # a channel it cannot join any more: the session is stopped with the reason
    assert "no session is running" in await Commands(ControlClient(nc, tenant),
                                                     Voice()).session_status(GM)
    assert "voice failed when the edge came back" in control.log_path.read_text()
    await bot.close()


async def test_the_gm_teaches_and_recalls_from_discord(nc, tenant, control):
    import asyncio

    from glyphoxa_events.models import NpcTaught, Outcome, TurnEnded

    await table(control, tenant)
    commands = Commands(ControlClient(nc, tenant), Voice())
    assert "started" in await commands.session_start(GM)
    sid = (await ControlClient(nc, tenant).find(GUILD)).session.session  # type: ignore[union-attr]
    subjects = SessionSubjects(tenant, sid)
    sub = await nc.jetstream().subscribe(subjects.ctl("npc.taught"), ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)

    assert await commands.npc_teach(GM, "Greta", "  ") == "Teach something: the fact is empty."
    assert "under 300 characters" in await commands.npc_teach(GM, "Greta", "x" * 301)
    assert "only the game master" in await commands.npc_teach(PLAYER, "Greta", "A secret.")
    assert await commands.npc_teach(GM, "Greta", "The  bridge is out.") == (
        "Greta now knows: The bridge is out.")
    taught = parse_control((await sub.next_msg(3)).data)
    assert isinstance(taught, NpcTaught) and taught.npc == "greta"

    assert "Nothing said in this campaign's sessions matches 'dragon'" in await commands.recall(
        GM, "dragon")
    turn = TurnEnded(turn_id="sam-1", speaker="sam", npc="greta", outcome=Outcome.answered,
                     transcript="Greta, we will hunt the red dragon.", reply_text="Aye.")
    await nc.jetstream().publish(subjects.ctl("turn"), turn.to_bytes(),
                                 headers={"Nats-Msg-Id": f"ctl:{tenant}.{sid}:turn:sam-1"})
    for _ in range(50):
        answer = await commands.recall(GM, "dragon")
        if "Nothing" not in answer:
            break
        await asyncio.sleep(0.1)
    head, line = answer.splitlines()
    assert head == "Said in this campaign, newest first ('dragon'):"
    assert line.endswith(f"`{sid}` sam to greta: Greta, we will hunt the red dragon.")
    assert "only the game master" in await commands.recall(PLAYER, "dragon")
    assert await commands.recall(GM, " ") == "Give the words to look for, e.g. /recall dragon."
    await commands.session_stop(GM)
    await sub.unsubscribe()
