"""What a game master does to a running session from Discord: find it, list, mute and puppet
its NPCs; and who counts as the GM.

Slash commands come from discord-edge over ``glxapi.*`` with a :class:`Caller`. Refused:
a guild the tenant does not allow, another guild's session, and control commands from a
member without the campaign's ``gm_role`` (role name or id; a campaign without one leaves
control to members who may manage the server). Mutes and GM lines reach the stages as
``ctl.npc.mute`` / ``ctl.npc.speak``; a mute also flushes what the NPC is saying.
"""

from __future__ import annotations

import time
import uuid

from psycopg_pool import AsyncConnectionPool

from glyphoxa_bus.publisher import Publisher
from glyphoxa_campaign import Campaign
from glyphoxa_events.api import Caller, NpcInfo
from glyphoxa_events.models import Flush, NpcForgot, NpcMute, NpcSpeak, NpcTaught
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_session_control import audit, memory
from glyphoxa_session_control.errors import Conflict, Forbidden, NotFound
from glyphoxa_session_control.lifecycle import Sessions
from glyphoxa_session_control.models import Session
from glyphoxa_session_control.tenants import Tenants

LIVE = ("pending", "active")


def is_gm(caller: Caller, campaign: Campaign) -> bool:
    if campaign.gm_role is None:
        return caller.manages_guild
    wanted = campaign.gm_role.strip().lstrip("@").casefold()
    return any(role.casefold() == wanted for role in caller.roles)


def gm_only(caller: Caller, campaign: Campaign, what: str) -> None:
    if is_gm(caller, campaign):
        return
    need = (f"the role {campaign.gm_role!r}" if campaign.gm_role
            else "the Manage Server permission (the campaign names no GM role)")
    raise Forbidden(f"only the game master may {what}: it needs {need}")


class GameMaster:
    def __init__(self, pool: AsyncConnectionPool, sessions: Sessions, tenants: Tenants,
                 publisher: Publisher):
        self._pool, self._sessions, self._tenants = pool, sessions, tenants
        self._publisher = publisher

    # --- who may -------------------------------------------------------------------------

    async def check_guild(self, tenant: str, caller: Caller) -> None:
        t = await self._tenants.get(tenant)
        if t.disabled:
            raise Forbidden(f"tenant {tenant!r} is disabled")
        if caller.guild_id not in t.allowed_guild_ids:
            raise Forbidden(f"this server ({caller.guild_id}) is not allowed for tenant "
                            f"{tenant!r}: the operator adds it to the tenant's allowed guilds")

    async def check(self, tenant: str, session: Session, caller: Caller | None, what: str,
                    *, control: bool = True) -> Campaign:
        """The session's campaign, once ``caller`` may do ``what`` to it."""
        campaign = await self._sessions.campaign_of(tenant, session.id)
        if caller is None:
            return campaign
        await self.check_guild(tenant, caller)
        if session.guild_id != caller.guild_id:
            raise Forbidden(f"session {session.id!r} runs in another server")
        if control:
            gm_only(caller, campaign, what)
        return campaign

    # --- commands ------------------------------------------------------------------------

    async def find(self, tenant: str, guild_id: str) -> Session:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM sessions WHERE tenant_id = %s AND guild_id = %s"
                " AND state = ANY(%s) ORDER BY created_at DESC LIMIT 1",
                (tenant, guild_id, list(LIVE)))
            row = await cur.fetchone()
        if row is None:
            raise NotFound("no session is running in this server: /session start begins one")
        return await self._sessions.get(tenant, row["id"])

    async def npcs(self, tenant: str, sid: str, caller: Caller | None = None) -> list[NpcInfo]:
        session = await self._sessions.get(tenant, sid)
        campaign = await self.check(tenant, session, caller, "list NPCs", control=False)
        return _infos(campaign, await self._muted(tenant, sid))

    async def mute(self, tenant: str, sid: str, npc: str, muted: bool, caller: Caller | None,
                   actor: str) -> list[NpcInfo]:
        session = await self._live(tenant, sid)
        campaign = await self.check(tenant, session, caller, "mute NPCs")
        if npc != "*" and campaign.npc(npc) is None:
            raise NotFound(_no_npc(npc, campaign))
        tokens = [n.token for n in campaign.npcs] if npc == "*" else [npc]
        async with self._pool.connection() as conn, conn.transaction():
            sql = ("UPDATE sessions SET muted_npcs = ARRAY(SELECT DISTINCT unnest(muted_npcs"
                   " || %s::text[])) WHERE tenant_id = %s AND id = %s") if muted else (
                  "UPDATE sessions SET muted_npcs = ARRAY(SELECT unnest(muted_npcs) EXCEPT"
                  " SELECT unnest(%s::text[])) WHERE tenant_id = %s AND id = %s")
            cur = await conn.execute(sql + " RETURNING muted_npcs", (tokens, tenant, sid))
            now_muted = set((await cur.fetchone())["muted_npcs"])
            await audit.record(conn, actor, tenant, "npc.mute" if muted else "npc.unmute",
                               f"{sid}/{npc}")
        s = SessionSubjects(tenant, sid)
        stamp = time.time_ns()
        await self._publisher.publish_event(s.ctl("npc.mute"), NpcMute(npc=npc, muted=muted),
                                            f"ctl:{tenant}.{sid}:npc.mute:{stamp}")
        if muted:  # what the NPC is saying stops too
            flush = Flush(npc=None if npc == "*" else npc, reason="muted by the game master")
            await self._publisher.publish_event(s.ctl("flush"), flush,
                                                f"ctl:{tenant}.{sid}:flush:mute:{stamp}")
        await self._publisher.flush()
        return _infos(campaign, now_muted)

    async def speak(self, tenant: str, sid: str, npc: str, text: str, caller: Caller | None,
                    actor: str) -> Session:
        session = await self._live(tenant, sid)
        campaign = await self.check(tenant, session, caller, "speak as an NPC")
        if campaign.npc(npc) is None:
            raise NotFound(_no_npc(npc, campaign))
        request_id = f"gm-{uuid.uuid4().hex[:16]}"
        async with self._pool.connection() as conn:
            await audit.record(conn, actor, tenant, "npc.speak", f"{sid}/{npc}",
                               request_id=request_id, characters=len(text))
        s = SessionSubjects(tenant, sid)
        await self._publisher.publish_event(
            s.ctl("npc.speak"), NpcSpeak(npc=npc, text=text, request_id=request_id),
            f"ctl:{tenant}.{sid}:npc.speak:{request_id}")
        await self._publisher.flush()
        return session

    async def teach(self, tenant: str, campaign_id: str, npc: str, text: str, actor: str,
                    session: str | None = None) -> dict:
        """Teach ``npc`` a fact (docs/memory.md): stored for good (only that NPC recalls it),
        and told at once to every live session of the campaign (``ctl.npc.taught``), so the
        NPC knows it from its next turn on, not only from the next session."""
        fact = await memory.teach_fact(self._pool, tenant, campaign_id, npc, text, actor,
                                       session=session)
        await self._tell_live(tenant, campaign_id, NpcTaught(
            npc=npc, fact_id=str(fact["id"]), text=fact["text"]))
        return fact

    async def correct(self, tenant: str, campaign_id: str, memory_id: int, text: str,
                      actor: str) -> dict:
        """The GM corrects a memory; a corrected fact is corrected in live sessions too (the
        NPC forgets the old text and is taught the new one)."""
        row, before = await memory.edit_memory(self._pool, tenant, campaign_id, memory_id, text,
                                               actor)
        if row["kind"] == "fact" and row["npc"] and before != row["text"]:
            fact_id = str(row["id"])
            await self._tell_live(tenant, campaign_id,
                                  NpcForgot(npc=row["npc"], fact_id=fact_id, text=before),
                                  NpcTaught(npc=row["npc"], fact_id=fact_id, text=row["text"]))
        return row

    async def forget(self, tenant: str, campaign_id: str, memory_id: int, actor: str,
                     kind: memory.Kind | None = None, npc: str | None = None) -> None:
        """The GM deletes a memory; a deleted fact leaves live sessions' prompts at once."""
        gone = await memory.delete_memory(self._pool, tenant, campaign_id, memory_id, actor,
                                          kind=kind, npc=npc)
        if gone["kind"] == "fact" and gone["npc"]:
            await self._tell_live(tenant, campaign_id, NpcForgot(
                npc=gone["npc"], fact_id=str(memory_id), text=gone["text"]))

    async def _tell_live(self, tenant: str, campaign_id: str,
                         *events: NpcTaught | NpcForgot) -> None:
        """``events`` to every live session of the campaign, in order. Each change has a
        message id of its own (a fact corrected and corrected back within JetStream's
        de-duplication window would otherwise repeat an earlier id and be dropped); a
        publisher's retry of the same change keeps it."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM sessions WHERE tenant_id = %s AND campaign_id = %s"
                " AND state = ANY(%s)", (tenant, campaign_id, list(LIVE)))
            live = [row["id"] for row in await cur.fetchall()]
        change = uuid.uuid4().hex[:12]
        for sid in live:
            for event in events:
                await self._publisher.publish_event(
                    SessionSubjects(tenant, sid).ctl(event.type), event,
                    f"ctl:{tenant}.{sid}:{event.type}:{event.fact_id}:{change}")
        if live:
            await self._publisher.flush()

    async def teach_in_session(self, tenant: str, sid: str, npc: str, text: str,
                               caller: Caller | None, actor: str) -> dict:
        """``/npc teach``: a fact for an NPC of the running session's campaign."""
        session = await self._live(tenant, sid)
        campaign = await self.check(tenant, session, caller, "teach an NPC")
        if campaign.npc(npc) is None:
            raise NotFound(_no_npc(npc, campaign))
        return await self.teach(tenant, session.campaign, npc, text, actor, session=sid)

    async def search(self, tenant: str, sid: str, q: str, caller: Caller | None,
                     limit: int = 10) -> list[memory.SearchHit]:
        """``/recall``: the campaign's transcripts matching ``q`` across its sessions, newest
        first. The GM's only: the players' lines to every NPC are in it."""
        session = await self._sessions.get(tenant, sid)
        await self.check(tenant, session, caller, "search the campaign's transcripts")
        return await memory.search_transcripts(self._pool, tenant, session.campaign, q, limit)

    # --- helpers -------------------------------------------------------------------------

    async def _live(self, tenant: str, sid: str) -> Session:
        session = await self._sessions.get(tenant, sid)
        if session.state not in LIVE:
            raise Conflict(f"session {sid!r} is {session.state}, not running")
        return session

    async def _muted(self, tenant: str, sid: str) -> set[str]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT muted_npcs FROM sessions WHERE tenant_id = %s AND id = %s", (tenant, sid))
            row = await cur.fetchone()
        return set(row["muted_npcs"]) if row else set()


def _infos(campaign: Campaign, muted: set[str]) -> list[NpcInfo]:
    return [NpcInfo(token=n.token, name=n.name, muted=n.token in muted) for n in campaign.npcs]


def _no_npc(npc: str, campaign: Campaign) -> str:
    names = ", ".join(n.token for n in campaign.npcs)
    return f"no NPC {npc!r} in campaign {campaign.name!r} (it has: {names})"
