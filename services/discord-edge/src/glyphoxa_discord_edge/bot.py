"""One tenant's Discord bot: its slash commands and its voice connections.

:class:`TenantBot` is a ``discord.Client`` with the ``/session`` and ``/npc`` command groups
(:func:`command_groups`, answered by :class:`Commands`) and the :class:`VoiceHost` the
commands need: permission checks, joining a voice channel with a :class:`SessionBridge`
attached, and leaving. Commands from guilds the tenant does not allow are refused before
anything else. discord.py reconnects the gateway and voice by itself; a voice connection
that is lost for good ends its session with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import discord
from discord import app_commands
from nats.aio.client import Client

from glyphoxa_discord_edge.bridge import SessionBridge
from glyphoxa_discord_edge.commands import Commands, Invocation, VoiceError
from glyphoxa_discord_edge.control import ControlClient, ControlUnavailable
from glyphoxa_discord_edge.inbound import Bus
from glyphoxa_discord_edge.metrics import EdgeTotals, bridge_counts, receive_counts
from glyphoxa_discord_edge.voice_receive import ReceiveCounters, ReceivingVoiceClient
from glyphoxa_events.api import Bot
from glyphoxa_events.subjects import SessionSubjects

log = logging.getLogger("glyphoxa.discord_edge.bot")

NEEDED = (("view_channel", "View Channel"), ("connect", "Connect"), ("speak", "Speak"))
VOICE_TIMEOUT_S = 20.0
VOICE_RECONNECT_S = 45.0
"""How long a session waits for discord.py to connect voice again after losing it."""


def invocation(interaction: discord.Interaction) -> Invocation:
    """Who ran a command and where, as the handlers need it."""
    member = interaction.user
    roles: tuple[str, ...] = ()
    manages = False
    voice_id, voice_name = None, ""
    if isinstance(member, discord.Member):
        roles = tuple(x for r in member.roles if not r.is_default() for x in (str(r.id), r.name))
        manages = member.guild_permissions.manage_guild
        if member.voice is not None and member.voice.channel is not None:
            voice_id, voice_name = str(member.voice.channel.id), member.voice.channel.name
    return Invocation(guild_id=str(interaction.guild_id) if interaction.guild_id else None,
                      user_id=str(member.id), roles=roles, manages_guild=manages,
                      voice_channel_id=voice_id, voice_channel_name=voice_name)


async def answer(interaction: discord.Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text[:2000], ephemeral=True)
    else:
        await interaction.response.send_message(text[:2000], ephemeral=True)


def command_groups(commands: Commands) -> list[app_commands.Group | app_commands.Command]:
    """``/session start|stop|status``, ``/npc list|mute|unmute|muteall|unmuteall|speak|teach``
    and ``/recall``."""

    class SessionGroup(app_commands.Group):
        @app_commands.command(description="Start a session in your voice channel")
        @app_commands.describe(campaign="the campaign to play (the table's only one if empty)")
        async def start(self, interaction: discord.Interaction,
                        campaign: str | None = None) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)  # voice takes time
            await answer(interaction, await commands.session_start(invocation(interaction),
                                                                   campaign))

        @app_commands.command(description="Stop this server's session")
        async def stop(self, interaction: discord.Interaction) -> None:
            await answer(interaction, await commands.session_stop(invocation(interaction)))

        @app_commands.command(description="Show this server's session")
        async def status(self, interaction: discord.Interaction) -> None:
            await answer(interaction, await commands.session_status(invocation(interaction)))

    class NpcGroup(app_commands.Group):
        @app_commands.command(name="list", description="The session's NPCs")
        async def list_(self, interaction: discord.Interaction) -> None:
            await answer(interaction, await commands.npc_list(invocation(interaction)))

        @app_commands.command(description="Mute an NPC")
        @app_commands.describe(npc="the NPC's name")
        async def mute(self, interaction: discord.Interaction, npc: str) -> None:
            await answer(interaction, await commands.npc_mute(invocation(interaction), npc, True))

        @app_commands.command(description="Unmute an NPC")
        @app_commands.describe(npc="the NPC's name")
        async def unmute(self, interaction: discord.Interaction, npc: str) -> None:
            await answer(interaction, await commands.npc_mute(invocation(interaction), npc, False))

        @app_commands.command(description="Mute every NPC")
        async def muteall(self, interaction: discord.Interaction) -> None:
            await answer(interaction, await commands.npc_mute_all(invocation(interaction), True))

        @app_commands.command(description="Unmute every NPC")
        async def unmuteall(self, interaction: discord.Interaction) -> None:
            await answer(interaction, await commands.npc_mute_all(invocation(interaction), False))

        @app_commands.command(description="Say something as an NPC, in its voice")
        @app_commands.describe(npc="the NPC's name", text="what it says")
        async def speak(self, interaction: discord.Interaction, npc: str, text: str) -> None:
            await answer(interaction, await commands.npc_speak(invocation(interaction), npc, text))

        @app_commands.command(description="Teach an NPC a fact it knows from now on")
        @app_commands.describe(npc="the NPC's name", fact="what it knows (under 300 characters)")
        async def teach(self, interaction: discord.Interaction, npc: str, fact: str) -> None:
            await answer(interaction, await commands.npc_teach(invocation(interaction), npc, fact))

    @app_commands.command(name="recall", description="Search what was said in this campaign")
    @app_commands.describe(words="the words to look for (\"a phrase\", -not)")
    @app_commands.guild_only()
    async def recall(interaction: discord.Interaction, words: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await answer(interaction, await commands.recall(invocation(interaction), words))

    return [SessionGroup(name="session", description="Glyphoxa sessions", guild_only=True),
            NpcGroup(name="npc", description="Glyphoxa NPCs", guild_only=True), recall]


class _Sink:
    """Frames to the voice connection, as they are (``encode=False``: no re-encoding). The
    connection is swapped when voice is connected anew under the same session."""

    def __init__(self, vc: discord.VoiceClient):
        self.vc = vc

    def send(self, opus: bytes) -> None:
        if self.vc.is_connected():
            self.vc.send_audio_packet(opus, encode=False)


@dataclass
class _Voice:
    """A bridged session's voice connection: the channel, and what plays into it."""

    channel_id: str
    sink: _Sink

    @property
    def vc(self) -> ReceivingVoiceClient:
        assert isinstance(self.sink.vc, ReceivingVoiceClient)
        return self.sink.vc


class TenantBot(discord.Client):
    """A tenant's bot; ``bridges`` are its live sessions by guild id."""

    def __init__(self, bot: Bot, nc: Client, bus: Bus,
                 on_sessions: Callable[[], None] = lambda: None):
        intents = discord.Intents.none()
        intents.guilds = intents.voice_states = True
        super().__init__(intents=intents, member_cache_flags=discord.MemberCacheFlags.from_intents(
            intents))
        self.tenant, self.allowed = bot.tenant, set(bot.allowed_guild_ids)
        self._nc, self._bus, self._on_sessions = nc, bus, on_sessions
        self.tree = app_commands.CommandTree(self)
        self.tree.interaction_check = self._allowed  # type: ignore[method-assign]
        self.control = ControlClient(nc, bot.tenant)
        self.commands = Commands(self.control, self)
        for group in command_groups(self.commands):
            self.tree.add_command(group)
        self.bridges: dict[str, SessionBridge] = {}
        self._voice: dict[str, _Voice] = {}
        self.totals = EdgeTotals(lambda: [bridge_counts(b, self._receive(g))
                                          for g, b in self.bridges.items()])

    def _receive(self, guild_id: str) -> ReceiveCounters | None:
        voice = self._voice.get(guild_id)
        return voice.vc.receiver.counters if voice else None

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_ready(self) -> None:
        log.info("bot connected", extra={"tenant": self.tenant,
                                         "guilds": len(self.guilds)})
        for guild_id in list(self.bridges):
            await self._keep_voice(guild_id)
        await self.rejoin([str(g.id) for g in self.guilds])

    async def _keep_voice(self, guild_id: str) -> None:
        """After a gateway session that could not be resumed: discord.py has forgotten its
        voice connections, so the session's voice is connected anew under the same bridge
        (or, failing that, the session ends with the reason)."""
        guild, voice = self.get_guild(int(guild_id)), self._voice.get(guild_id)
        if voice is None or (guild is not None and guild.voice_client is voice.vc):
            return
        self._drop_voice(guild_id)
        with contextlib.suppress(Exception):
            await voice.vc.drop()
        bridge = self.bridges[guild_id]
        try:
            channel = self._voice_channel(guild_id, voice.channel_id)
            vc = await self._connect(channel)
        except VoiceError as exc:
            await self._end_session(guild_id, bridge.subjects.session,
                                    f"voice failed after a new gateway session: {exc}")
            return
        if self.bridges.get(guild_id) is not bridge:  # the session ended meanwhile
            with contextlib.suppress(Exception):
                await vc.disconnect(force=True)
            return
        voice.sink.vc = vc
        self._voice[guild_id] = voice
        vc.receiver.start(bridge.packet)
        log.info("voice connected anew", extra={"tenant": self.tenant,
                                                "session": bridge.subjects.session})

    async def rejoin(self, guild_ids: list[str]) -> None:
        """Take up the live sessions of these guilds again (after an edge restart or a
        gateway reconnect): join their voice channels; a session whose channel cannot be
        joined is stopped with the reason."""
        for guild_id in guild_ids:
            if guild_id not in self.allowed or guild_id in self.bridges:
                continue
            try:
                reply = await self.control.find(guild_id)
            except ControlUnavailable as exc:
                log.warning("cannot look for live sessions: %s", exc, extra={"tenant": self.tenant})
                return
            s = reply.session
            if not reply.ok or s is None or s.edge != "discord" or s.channel_id is None:
                continue
            try:
                await self.join(guild_id, s.channel_id, s.session)
                log.info("session taken up again", extra={"tenant": self.tenant,
                                                          "session": s.session})
            except VoiceError as exc:
                await self._end_session(guild_id, s.session,
                                        f"voice failed when the edge came back: {exc}")

    async def _end_session(self, guild_id: str, session: str, reason: str) -> None:
        """Leave the guild's voice (if in it) and stop its session, ``reason`` kept in the
        session's record."""
        await self.leave(guild_id, reason)
        with contextlib.suppress(ControlUnavailable):
            await self.control.stop(session, reason, None)

    async def _allowed(self, interaction: discord.Interaction) -> bool:
        if interaction.guild_id is not None and str(interaction.guild_id) in self.allowed:
            return True
        await answer(interaction, "This server is not one of this table's: ask the operator "
                                  "to allow it.")
        return False

    def sessions(self) -> list[str]:
        return [f"{b.subjects.tenant}.{b.subjects.session}" for b in self.bridges.values()]

    # --- VoiceHost ------------------------------------------------------------------------

    def missing_permissions(self, guild_id: str, channel_id: str) -> list[str]:
        try:
            channel = self._voice_channel(guild_id, channel_id)
        except VoiceError:  # a channel the bot cannot see
            return ["View Channel"]
        perms = channel.permissions_for(channel.guild.me)
        return [name for attr, name in NEEDED if not getattr(perms, attr)]

    def _voice_channel(self, guild_id: str, channel_id: str) -> discord.VoiceChannel | discord.StageChannel:
        guild = self.get_guild(int(guild_id))
        channel = guild.get_channel(int(channel_id)) if guild else None
        if guild is None or not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
            raise VoiceError("the voice channel is gone")
        return channel

    @staticmethod
    async def _connect(channel: discord.VoiceChannel | discord.StageChannel) -> ReceivingVoiceClient:
        try:
            vc = await channel.connect(cls=ReceivingVoiceClient, self_deaf=False,
                                       timeout=VOICE_TIMEOUT_S, reconnect=True)
        except TimeoutError:
            raise VoiceError(f"Discord's voice server did not answer within "
                             f"{VOICE_TIMEOUT_S:g} s") from None
        except (discord.ClientException, discord.DiscordException) as exc:
            raise VoiceError(str(exc) or type(exc).__name__) from None
        assert isinstance(vc, ReceivingVoiceClient)
        return vc

    def _drop_voice(self, guild_id: str) -> ReceivingVoiceClient | None:
        """Stop receiving from the session's voice connection (its counts are kept)."""
        voice = self._voice.pop(guild_id, None)
        if voice is None:
            return None
        voice.vc.receiver.stop()
        self.totals.retire(receive_counts(voice.vc.receiver.counters))
        return voice.vc

    async def join(self, guild_id: str, channel_id: str, session: str) -> None:
        channel = self._voice_channel(guild_id, channel_id)
        guild = channel.guild
        if guild_id in self.bridges:
            await self.leave(guild_id, "another session started")
        vc = await self._connect(channel)

        def name(user_id: int) -> str:
            member = guild.get_member(user_id)
            return member.display_name if member else ""

        def speaking(npc: str, on: bool) -> None:
            voice = self._voice.get(guild_id)
            state = discord.SpeakingState.voice if on else discord.SpeakingState.none
            if voice is not None:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().create_task(voice.vc.ws.speak(state))

        sink = _Sink(vc)
        bridge = SessionBridge(self._nc, self._bus, SessionSubjects(self.tenant, session),
                               sink, name, speaking=speaking,
                               on_stopped=lambda reason: self.leave(guild_id, reason))
        await bridge.start()
        vc.receiver.start(bridge.packet)
        self.bridges[guild_id] = bridge
        self._voice[guild_id] = _Voice(channel_id, sink)
        self._on_sessions()
        log.info("voice joined", extra={"tenant": self.tenant, "session": session,
                                        "guild": guild_id})

    async def leave(self, guild_id: str, reason: str) -> None:
        bridge = self.bridges.pop(guild_id, None)
        vc = self._drop_voice(guild_id)
        if bridge is None and vc is None:
            return  # left already (the session's end and the command both ask)
        if bridge is not None:
            self.totals.retire(bridge_counts(bridge, None))
            await bridge.close()
            self._on_sessions()
        if vc is not None:
            guild = self.get_guild(int(guild_id))
            with contextlib.suppress(Exception):
                if guild is not None and guild.voice_client is vc:
                    await vc.disconnect(force=True)  # waits for Discord to confirm
                else:  # discord.py let it go already: no confirmation would reach it
                    await vc.drop()
        log.info("voice left", extra={"tenant": self.tenant, "guild": guild_id,
                                      "reason": reason})

    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        """The bot out of its channel: discord.py reconnects by itself after a voice server
        drop, so the session waits for that (up to ``VOICE_RECONNECT_S``); when discord.py
        gives up (kicked, channel deleted, no voice server), the session ends with that
        reason instead of waiting for a timeout."""
        if self.user is None or member.id != self.user.id or after.channel is not None:
            return
        guild_id = str(member.guild.id)
        bridge = self.bridges.get(guild_id)
        if bridge is None:
            return
        deadline = asyncio.get_running_loop().time() + VOICE_RECONNECT_S
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.25)
            voice = self._voice.get(guild_id)
            if self.bridges.get(guild_id) is not bridge or voice is None:
                return  # the session ended or its voice was replaced meanwhile
            if voice.vc.is_connected():
                return
            if member.guild.voice_client is not voice.vc:
                break  # discord.py gave up on it
        log.warning("session ending: voice lost", extra={"tenant": self.tenant,
                                                          "session": bridge.subjects.session})
        await self._end_session(guild_id, bridge.subjects.session, (
            "voice failed: the bot was disconnected from the voice channel (kicked, moved "
            "out, or the channel was deleted) and could not connect again"))

    async def close(self) -> None:
        for guild_id in list(self.bridges):
            await self.leave(guild_id, "edge stopping")
        await super().close()
