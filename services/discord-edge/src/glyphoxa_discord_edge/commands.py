"""The slash commands: ``/session start|stop|status``, ``/npc list|mute|unmute|muteall|
unmuteall|speak|teach`` and ``/recall``.

:class:`Commands` holds what each command does and answers, without discord.py: it gets an
:class:`Invocation` (who asked, where) and returns the text the member sees (ephemeral).
session-control decides who may (the campaign's GM role, the tenant's allowed guilds) and
says why not; the edge adds what only it knows: the caller's voice channel, and whether the
bot may connect and speak there (checked before a session starts, so a missing permission is
a clear answer rather than a silent timeout). ``glyphoxa_discord_edge.bot.command_groups``
binds the commands to a discord.py command tree.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

from glyphoxa_discord_edge.control import ControlClient, ControlUnavailable
from glyphoxa_events.api import (
    ApiReply,
    Caller,
    NpcInfo,
    NpcsReply,
    SearchHitInfo,
    SearchReply,
    TaughtReply,
)
from glyphoxa_events.tokens import InvalidToken, slugify

log = logging.getLogger("glyphoxa.discord_edge.commands")
P = ParamSpec("P")
R = TypeVar("R", ApiReply, NpcsReply, TaughtReply, SearchReply)
DISCORD_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Invocation:
    """Who ran a command, and where."""

    guild_id: str | None
    """None in a direct message: every command needs a server."""
    user_id: str
    roles: tuple[str, ...] = ()
    """The member's roles, ids and names."""
    manages_guild: bool = False
    voice_channel_id: str | None = None
    """The voice channel the member is in, if any."""
    voice_channel_name: str = ""

    def caller(self) -> Caller:
        assert self.guild_id is not None
        return Caller(guild_id=self.guild_id, user_id=self.user_id, roles=self.roles,
                      manages_guild=self.manages_guild)


class VoiceError(Exception):
    """Joining or holding a voice channel failed; the message says why."""


class VoiceHost(Protocol):
    """The bot's voice side (``glyphoxa_discord_edge.bot`` in the service)."""

    def missing_permissions(self, guild_id: str, channel_id: str) -> list[str]:
        """The permissions the bot lacks in the channel (e.g. ["Connect", "Speak"])."""
        ...

    async def join(self, guild_id: str, channel_id: str, session: str) -> None:
        """Connect to the channel and bridge it to ``session``; raises VoiceError."""
        ...

    async def leave(self, guild_id: str, reason: str) -> None: ...


class Refused(Exception):
    """A command cannot go on; the message is the answer the member sees."""


def answers(command: Callable[P, Awaitable[str]]) -> Callable[P, Awaitable[str]]:
    """A command's answer, or the reason it was refused."""

    @functools.wraps(command)
    async def run(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return await command(*args, **kwargs)
        except Refused as exc:
            return str(exc)

    return run


class Commands:
    def __init__(self, control: ControlClient, voice: VoiceHost):
        self._control, self._voice = control, voice

    # --- /session ------------------------------------------------------------------------

    @answers
    async def session_start(self, inv: Invocation, campaign: str | None = None) -> str:
        guild = _guild(inv)
        if inv.voice_channel_id is None:
            return "Join a voice channel first: the NPCs speak in the one you are in."
        missing = self._voice.missing_permissions(guild, inv.voice_channel_id)
        if missing:
            return (f"I cannot work in {_channel(inv)}: I lack the permission(s) "
                    f"{', '.join(missing)} there. Ask a server admin to grant them.")
        cid = _token(campaign, "campaign") if campaign else None
        reply = await self._ask(self._control.start(cid, guild, inv.voice_channel_id,
                                                    inv.caller()), "Could not start a session")
        assert reply.session is not None
        session = reply.session.session
        try:
            await self._voice.join(guild, inv.voice_channel_id, session)
        except VoiceError as exc:
            with contextlib.suppress(Refused):
                await self._ask(self._control.stop(session, f"voice failed: {exc}", None))
            return f"Could not join {_channel(inv)}: {exc}. The session was stopped."
        try:
            names = ", ".join(n.name for n in (await self._ask(self._control.npcs(session))).npcs)
        except Refused:
            names = ""
        return (f"Session `{session}` started (campaign {reply.session.campaign}) in "
                f"{_channel(inv)}." + (f" NPCs: {names}." if names else ""))

    @answers
    async def session_stop(self, inv: Invocation) -> str:
        session = await self._session(inv)
        await self._ask(self._control.stop(session, "stopped by the game master", inv.caller()),
                        "Could not stop the session")
        await self._voice.leave(_guild(inv), "session stopped")
        return f"Session `{session}` stopped. The transcript is kept."

    @answers
    async def session_status(self, inv: Invocation) -> str:
        s = (await self._ask(self._control.find(_guild(inv)))).session
        assert s is not None
        npcs = await self._ask(self._control.npcs(s.session))
        return f"Session `{s.session}` is {s.state} (campaign {s.campaign}).\n" + _npc_lines(
            npcs.npcs)

    # --- /npc ----------------------------------------------------------------------------

    @answers
    async def npc_list(self, inv: Invocation) -> str:
        return _npc_lines((await self._ask(self._control.npcs(await self._session(inv)))).npcs)

    @answers
    async def npc_mute(self, inv: Invocation, npc: str, muted: bool) -> str:
        return await self._mute(inv, _token(npc, "NPC"), muted)

    @answers
    async def npc_mute_all(self, inv: Invocation, muted: bool) -> str:
        return await self._mute(inv, "*", muted)

    @answers
    async def npc_speak(self, inv: Invocation, npc: str, text: str) -> str:
        token, text = _token(npc, "NPC"), text.strip()
        if not text:
            return "Say something: the text is empty."
        await self._ask(self._control.speak(await self._session(inv), token, text[:1000],
                                            inv.caller()), "Could not speak")
        return f"{npc} says: {text[:200]}"

    @answers
    async def npc_teach(self, inv: Invocation, npc: str, fact: str) -> str:
        token, fact = _token(npc, "NPC"), " ".join(fact.split())
        if not fact:
            return "Teach something: the fact is empty."
        if len(fact) > 300:
            return "Keep a fact under 300 characters: teach a long one as several."
        await self._ask(self._control.teach(await self._session(inv), token, fact, inv.caller()),
                        "Could not teach")
        return f"{npc} now knows: {fact}"

    # --- /recall -------------------------------------------------------------------------

    @answers
    async def recall(self, inv: Invocation, words: str) -> str:
        words = " ".join(words.split())
        if not words:
            return "Give the words to look for, e.g. /recall dragon."
        reply = await self._ask(self._control.search(await self._session(inv), words[:500],
                                                     inv.caller()), "Could not search")
        if not reply.hits:
            return f"Nothing said in this campaign's sessions matches {words!r}."
        head = f"Said in this campaign, newest first ({words!r}):"
        lines = [head]
        for hit in reply.hits:
            line = _hit_line(hit)
            if sum(len(x) + 1 for x in lines) + len(line) > DISCORD_MESSAGE_CHARS - 20:
                lines.append("...")
                break
            lines.append(line)
        return "\n".join(lines)

    # --- helpers -------------------------------------------------------------------------

    async def _mute(self, inv: Invocation, npc: str, muted: bool) -> str:
        reply = await self._ask(self._control.mute(await self._session(inv), npc, muted,
                                                   inv.caller()),
                                f"Could not {'mute' if muted else 'unmute'}")
        return _npc_lines(reply.npcs)

    async def _session(self, inv: Invocation) -> str:
        """The id of the guild's live session."""
        reply = await self._ask(self._control.find(_guild(inv)))
        assert reply.session is not None
        return reply.session.session

    @staticmethod
    async def _ask(request: Awaitable[R], failed: str = "") -> R:
        """The reply when ok; Refused with the reason otherwise (refused, or no answer)."""
        try:
            reply = await request
        except ControlUnavailable as exc:
            log.warning("session-control unavailable: %s", exc)
            raise Refused(f"Glyphoxa's control service is not answering ({exc}); try again "
                          "shortly.") from None
        if not reply.ok:
            reason = reply.error or "refused"
            raise Refused(f"{failed}: {reason}" if failed else reason)
        return reply


NO_GUILD = "Glyphoxa's commands work in a server, not in direct messages."


def _channel(inv: Invocation) -> str:
    return f"#{inv.voice_channel_name}" if inv.voice_channel_name else "your voice channel"


def _guild(inv: Invocation) -> str:
    if inv.guild_id is None:
        raise Refused(NO_GUILD)
    return inv.guild_id


def _token(name: str, what: str) -> str:
    try:
        return slugify(name)
    except InvalidToken:
        raise Refused(f"{name!r} is not a{'n' if what[0] in 'AEIOUN' else ''} {what} name.") from None


def _npc_lines(npcs: tuple[NpcInfo, ...]) -> str:
    if not npcs:
        return "No NPCs."
    return "NPCs: " + ", ".join(f"{n.name}{' (muted)' if n.muted else ''}" for n in npcs)


def _hit_line(hit: SearchHitInfo) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(hit.spoken_ns / 1e9))
    who = f"{hit.speaker} to {hit.npc}" if hit.role == "player" and hit.npc else hit.speaker
    text = hit.text if len(hit.text) <= 200 else hit.text[:197] + "..."
    return f"{when} UTC `{hit.session}` {who}: {text}"
