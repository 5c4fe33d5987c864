"""The discord.py side of the slash commands, without Discord: the command tree the bot
registers, how an interaction becomes an ``Invocation``, the answer sent back (ephemeral),
refused guilds, and the voice permission check."""

from __future__ import annotations

from unittest.mock import AsyncMock, MagicMock

import discord
import pytest

from glyphoxa_discord_edge.bot import TenantBot, command_groups, invocation
from glyphoxa_discord_edge.commands import Invocation
from glyphoxa_events.api import Bot

pytestmark = pytest.mark.unit

GUILD, VOICE = 111111111111111111, 333333333333333333


class Recorder:
    """Stands in for ``Commands``: records what each command was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        async def command(*args):  # type: ignore[no-untyped-def]
            self.calls.append((name, *args))
            return f"answer of {name}"
        return command


def role(rid: int, name: str, default: bool = False) -> MagicMock:
    r = MagicMock(id=rid)
    r.name = name
    r.is_default.return_value = default
    return r


def interaction(in_voice: bool = True, guild: int | None = GUILD) -> MagicMock:
    member = MagicMock(spec=discord.Member)
    member.id = 42
    member.roles = [role(GUILD, "@everyone", default=True), role(777, "GM")]
    member.guild_permissions = MagicMock(manage_guild=False)
    member.voice = MagicMock(channel=MagicMock(id=VOICE)) if in_voice else None
    if in_voice:
        member.voice.channel.name = "Tavern"
    inter = MagicMock(spec=discord.Interaction)
    inter.user, inter.guild_id = member, guild
    inter.response = MagicMock(send_message=AsyncMock(), defer=AsyncMock(),
                               is_done=MagicMock(return_value=False))
    inter.followup = MagicMock(send=AsyncMock())
    return inter


def test_the_command_tree_is_the_issues():
    groups = {g.name: g for g in command_groups(Recorder())}  # type: ignore[arg-type]
    assert sorted(c.name for c in groups["session"].commands) == ["start", "status", "stop"]
    assert sorted(c.name for c in groups["npc"].commands) == [
        "list", "mute", "muteall", "speak", "teach", "unmute", "unmuteall"]
    assert sorted(groups) == ["npc", "recall", "session"]
    assert [p.name for p in groups["recall"].parameters] == ["words"]
    speak = groups["npc"].get_command("speak")
    assert speak is not None and [p.name for p in speak.parameters] == ["npc", "text"]
    start = groups["session"].get_command("start")
    assert start is not None and not start.parameters[0].required  # [campaign]
    assert all(g.guild_only for g in groups.values())


def test_an_interaction_becomes_an_invocation():
    inv = invocation(interaction())
    assert inv == Invocation(guild_id=str(GUILD), user_id="42", roles=("777", "GM"),
                             manages_guild=False, voice_channel_id=str(VOICE),
                             voice_channel_name="Tavern")
    assert invocation(interaction(in_voice=False)).voice_channel_id is None


@pytest.mark.parametrize(("group", "name", "args", "called"), [
    ("session", "stop", (), ("session_stop",)),
    ("session", "status", (), ("session_status",)),
    ("npc", "list", (), ("npc_list",)),
    ("npc", "mute", ("Greta",), ("npc_mute", "Greta", True)),
    ("npc", "unmute", ("Greta",), ("npc_mute", "Greta", False)),
    ("npc", "muteall", (), ("npc_mute_all", True)),
    ("npc", "unmuteall", (), ("npc_mute_all", False)),
    ("npc", "speak", ("Greta", "Out!"), ("npc_speak", "Greta", "Out!")),
    ("npc", "teach", ("Greta", "The bridge is out."), ("npc_teach", "Greta", "The bridge is out.")),
])
async def test_each_command_asks_its_handler_and_answers_ephemerally(group, name, args, called):
    commands = Recorder()
    g = {g.name: g for g in command_groups(commands)}[group]  # type: ignore[arg-type]
    inter = interaction()
    cmd = g.get_command(name)
    assert cmd is not None
    await cmd.callback(g, inter, *args)
    (call,) = commands.calls
    assert call[0] == called[0] and isinstance(call[1], Invocation) and call[2:] == called[1:]
    inter.response.send_message.assert_awaited_once_with(f"answer of {called[0]}", ephemeral=True)


async def test_start_defers_first_then_answers_in_a_followup():
    commands = Recorder()
    g = {g.name: g for g in command_groups(commands)}["session"]  # type: ignore[arg-type]
    inter = interaction()
    inter.response.is_done.return_value = True  # after the defer
    cmd = g.get_command("start")
    assert cmd is not None
    await cmd.callback(g, inter, "Forge")
    inter.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    inter.followup.send.assert_awaited_once_with("answer of session_start", ephemeral=True)
    assert commands.calls[0][2] == "Forge"


async def test_commands_from_a_guild_the_tenant_does_not_allow_are_refused():
    bot = TenantBot(Bot(tenant="t1", token="x" * 20, allowed_guild_ids=(str(GUILD),)),
                    nc=MagicMock(), bus=MagicMock())
    assert await bot._allowed(interaction())
    other = interaction(guild=222222222222222222)
    assert not await bot._allowed(other)
    other.response.send_message.assert_awaited_once()
    assert "not one of this table's" in other.response.send_message.await_args.args[0]
    await bot.close()


async def test_missing_voice_permissions_are_named():
    bot = TenantBot(Bot(tenant="t1", token="x" * 20), nc=MagicMock(), bus=MagicMock())
    channel = MagicMock(spec=discord.VoiceChannel)
    channel.permissions_for.return_value = discord.Permissions(view_channel=True, speak=True)
    guild = MagicMock()
    guild.get_channel.return_value = channel
    bot.get_guild = MagicMock(return_value=guild)  # type: ignore[method-assign]
    assert bot.missing_permissions(str(GUILD), str(VOICE)) == ["Connect"]
    channel.permissions_for.return_value = discord.Permissions(view_channel=True, connect=True,
                                                               speak=True)
    assert bot.missing_permissions(str(GUILD), str(VOICE)) == []
    bot.get_guild = MagicMock(return_value=None)  # type: ignore[method-assign]
    assert bot.missing_permissions(str(GUILD), str(VOICE)) == ["View Channel"]
    await bot.close()


async def test_recall_defers_then_answers_with_what_was_found():
    commands = Recorder()
    recall = {g.name: g for g in command_groups(commands)}["recall"]  # type: ignore[arg-type]
    inter = interaction()
    inter.response.is_done.return_value = True
    await recall.callback(inter, "dragon")
    inter.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    inter.followup.send.assert_awaited_once_with("answer of recall", ephemeral=True)
    assert commands.calls[0][0] == "recall" and commands.calls[0][2] == "dragon"
    assert recall.guild_only
