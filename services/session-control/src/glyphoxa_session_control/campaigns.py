"""Campaigns and their NPCs, per tenant. A campaign is stored as a row plus one row per NPC,
and always re-validated as a whole :class:`Campaign` (unique NPC names, at least one NPC)."""

from __future__ import annotations

import yaml
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from glyphoxa_campaign import Campaign, CampaignError, LLMSpec, Npc, load_campaign
from glyphoxa_events.tokens import InvalidToken, slugify
from glyphoxa_session_control import audit
from glyphoxa_session_control.errors import Conflict, Invalid, NotFound
from glyphoxa_session_control.models import CampaignSummary


def campaign_id(campaign: Campaign) -> str:
    try:
        return slugify(campaign.name)
    except InvalidToken:
        raise Invalid(f"name: {campaign.name!r} cannot become an id: it has no letter or digit") from None


def campaign_yaml(campaign: Campaign) -> str:
    """The campaign as a campaign.yaml that imports as the same campaign."""
    data = campaign.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def npc_token(npc: Npc) -> str:
    try:
        return npc.token
    except InvalidToken:
        raise Invalid(f"name: {npc.name!r} cannot become a token: it has no letter or digit") from None


class Campaigns:
    def __init__(self, pool: AsyncConnectionPool, allow_fake_providers: bool = False):
        self._pool, self._allow_fakes = pool, allow_fake_providers

    def refuse_fakes(self, campaign: Campaign) -> None:
        """A campaign may not put test doubles in front of players unless the operator
        runs a test stack (``SESSION_CONTROL_ALLOW_FAKE_PROVIDERS``)."""
        found = [] if self._allow_fakes else campaign.fake_providers()
        if found:
            raise Invalid(f"{found[0]}: 'fake' is a test double this deployment does not serve "
                          "(piper/elevenlabs for voices, llama/gemini/openai for the LLM)")

    async def list(self, tenant: str) -> list[CampaignSummary]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.id, c.name, c.updated_at, coalesce(array_agg(n.id::text ORDER BY n.position)"
                " FILTER (WHERE n.id IS NOT NULL), '{}'::text[]) AS npcs FROM campaigns c"
                " LEFT JOIN npcs n ON n.tenant_id = c.tenant_id AND n.campaign_id = c.id"
                " WHERE c.tenant_id = %s GROUP BY c.id, c.name, c.updated_at ORDER BY c.id", (tenant,))
            return [CampaignSummary(**row) for row in await cur.fetchall()]

    async def get(self, tenant: str, cid: str) -> Campaign:
        async with self._pool.connection() as conn:
            return await self._load(conn, tenant, cid)

    async def create(self, tenant: str, campaign: Campaign, actor: str,
                     cid: str | None = None, replace: bool = False) -> str:
        derived = campaign_id(campaign)
        if cid is not None and cid != derived:
            raise Invalid(f"name: {campaign.name!r} becomes the id {derived!r}, not {cid!r}")
        cid = derived
        self.refuse_fakes(campaign)
        async with self._pool.connection() as conn, conn.transaction():
            # a replace updates the row in place: deleting it would cascade to the campaign's
            # memories and recaps (migration 0008), which outlive a change of its YAML
            if replace:
                await conn.execute("DELETE FROM npcs WHERE tenant_id = %s AND campaign_id = %s",
                                   (tenant, cid))
            try:
                await conn.execute(
                    "INSERT INTO campaigns (tenant_id, id, name, llm, gm_role, lore, overhear)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    + (" ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name,"
                       " llm = excluded.llm, gm_role = excluded.gm_role, lore = excluded.lore,"
                       " overhear = excluded.overhear, updated_at = now()" if replace else ""),
                    (tenant, cid, campaign.name,
                     Jsonb(campaign.llm.model_dump(mode="json")) if campaign.llm else None,
                     campaign.gm_role, campaign.lore, campaign.overhear))
            except UniqueViolation:
                raise Conflict(f"campaign {cid!r} already exists (PUT replaces it)") from None
            for position, npc in enumerate(campaign.npcs):
                await self._insert_npc(conn, tenant, cid, npc, position)
            await audit.record(conn, actor, tenant, "campaign.replace" if replace else "campaign.create",
                               cid, npcs=[n.token for n in campaign.npcs])
        return cid

    async def import_yaml(self, tenant: str, text: str, actor: str, replace: bool) -> str:
        try:
            campaign = load_campaign(text, source="campaign.yaml")
        except CampaignError as exc:
            raise Invalid("; ".join(exc.problems)) from None
        return await self.create(tenant, campaign, actor, replace=replace)

    async def export_yaml(self, tenant: str, cid: str) -> str:
        return campaign_yaml(await self.get(tenant, cid))

    async def delete(self, tenant: str, cid: str, actor: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("DELETE FROM campaigns WHERE tenant_id = %s AND id = %s", (tenant, cid))
            if cur.rowcount == 0:
                raise NotFound(f"no campaign {cid!r}")
            await audit.record(conn, actor, tenant, "campaign.delete", cid)

    # NPCs

    async def npc(self, tenant: str, cid: str, npc_id: str) -> Npc:
        campaign = await self.get(tenant, cid)
        npc = campaign.npc(npc_id)
        if npc is None:
            raise NotFound(f"no NPC {npc_id!r} in campaign {cid!r}")
        return npc

    async def put_npc(self, tenant: str, cid: str, npc: Npc, actor: str,
                      npc_id: str | None = None, create_only: bool = False) -> Npc:
        if npc_id is not None and npc_token(npc) != npc_id:
            raise Invalid(f"name: {npc.name!r} becomes the token {npc.token!r}, not {npc_id!r}")
        async with self._pool.connection() as conn, conn.transaction():
            campaign = await self._load(conn, tenant, cid, lock=True)
            existing = campaign.npc(npc_token(npc))
            if existing is not None and create_only:
                raise Conflict(f"NPC {npc.token!r} already exists in campaign {cid!r}")
            npcs = [npc if n.token == npc.token else n for n in campaign.npcs]
            if existing is None:
                npcs.append(npc)
            self.refuse_fakes(self._validate(campaign.name, npcs, campaign.llm, campaign.gm_role,
                                              campaign.lore, campaign.overhear))
            await conn.execute(  # a new NPC goes last (positions have gaps after a delete)
                "INSERT INTO npcs (tenant_id, campaign_id, id, position, definition) VALUES"
                " (%s, %s, %s, (SELECT coalesce(max(position) + 1, 0) FROM npcs WHERE tenant_id = %s"
                " AND campaign_id = %s), %s) ON CONFLICT (tenant_id, campaign_id, id) DO UPDATE"
                " SET definition = excluded.definition, updated_at = now()",
                (tenant, cid, npc.token, tenant, cid, Jsonb(npc.model_dump(mode="json"))))
            await self._touch(conn, tenant, cid)
            await audit.record(conn, actor, tenant, "npc.update" if existing else "npc.create",
                               f"{cid}/{npc.token}")
        return npc

    async def delete_npc(self, tenant: str, cid: str, npc_id: str, actor: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            campaign = await self._load(conn, tenant, cid, lock=True)
            if campaign.npc(npc_id) is None:
                raise NotFound(f"no NPC {npc_id!r} in campaign {cid!r}")
            if len(campaign.npcs) == 1:
                raise Conflict("a campaign needs at least one NPC; delete the campaign instead")
            await conn.execute("DELETE FROM npcs WHERE tenant_id = %s AND campaign_id = %s AND id = %s",
                               (tenant, cid, npc_id))
            await self._touch(conn, tenant, cid)
            await audit.record(conn, actor, tenant, "npc.delete", f"{cid}/{npc_id}")

    # helpers

    async def _load(self, conn: AsyncConnection, tenant: str, cid: str, lock: bool = False) -> Campaign:
        cur = await conn.execute(
            "SELECT name, llm, gm_role, lore, overhear FROM campaigns WHERE tenant_id = %s AND id = %s"
            + (" FOR UPDATE" if lock else ""),
            (tenant, cid))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no campaign {cid!r}")
        cur = await conn.execute(
            "SELECT definition FROM npcs WHERE tenant_id = %s AND campaign_id = %s ORDER BY position, id",
            (tenant, cid))
        npcs = [Npc.model_validate(r["definition"]) for r in await cur.fetchall()]
        llm = LLMSpec.model_validate(row["llm"]) if row["llm"] else None
        return Campaign.model_construct(name=row["name"], npcs=tuple(npcs), llm=llm,
                                        gm_role=row["gm_role"], lore=row["lore"],
                                        overhear=row["overhear"])

    @staticmethod
    def _validate(name: str, npcs: list[Npc], llm: LLMSpec | None = None,
                  gm_role: str | None = None, lore: str = "", overhear: bool = False) -> Campaign:
        try:
            return Campaign(name=name, npcs=tuple(npcs), llm=llm, gm_role=gm_role, lore=lore,
                            overhear=overhear)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise Invalid(f"{where}: {first['msg']}") from None

    @staticmethod
    async def _insert_npc(conn: AsyncConnection, tenant: str, cid: str, npc: Npc, position: int) -> None:
        await conn.execute(
            "INSERT INTO npcs (tenant_id, campaign_id, id, position, definition) VALUES (%s, %s, %s, %s, %s)",
            (tenant, cid, npc.token, position, Jsonb(npc.model_dump(mode="json"))))

    @staticmethod
    async def _touch(conn: AsyncConnection, tenant: str, cid: str) -> None:
        await conn.execute("UPDATE campaigns SET updated_at = now() WHERE tenant_id = %s AND id = %s",
                           (tenant, cid))
