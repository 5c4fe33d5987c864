"""Which bots a discord-edge runs (``glxapi.edge.bots``, ``glxapi.edge.changed``), through a
real session-control process: the tokens arrive sealed with the edge key and only at the
edge the tenant names; a token, guild or state change tells the edge to ask again."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from glyphoxa_discord_edge.bots import BotDirectory, BotsUnavailable
from glyphoxa_session_control.crypto import new_secret_key
from tests.support.control import module_control
from tests.support.service import wait_for

pytestmark = pytest.mark.integration

EDGE_KEY = new_secret_key()
GUILD = "111111111111111111"


control, nc = module_control("edge-bots", {"NATS_EDGE_KEY": EDGE_KEY})


def token() -> str:
    return "MTA" + uuid.uuid4().hex + ".Gx." + uuid.uuid4().hex


async def test_an_edge_gets_its_tenants_bots_and_hears_of_changes(nc, control):
    edge = "e" + uuid.uuid4().hex[:8]
    first, second, elsewhere = token(), token(), token()
    t1, t2, t3 = (f"b{uuid.uuid4().hex[:8]}" for _ in range(3))
    async with control.operator() as op:
        await op.call("POST", "/v1/tenants", json={
            "id": t1, "name": "Table one", "bot_token": first, "discord_edge": edge,
            "allowed_guild_ids": [GUILD]})
        await op.call("POST", "/v1/tenants", json={"id": t3, "name": "Other edge",
                                                   "bot_token": elsewhere})
    directory = BotDirectory(nc, edge, EDGE_KEY)
    bots = await directory.fetch()
    assert [(b.tenant, b.token, b.allowed_guild_ids) for b in bots] == [(t1, first, (GUILD,))]

    changes: list[int] = []

    async def changed() -> None:
        changes.append(len(await directory.fetch()))

    await directory.watch(changed)
    seen: list[bytes] = []

    async def spy(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(msg.data)

    await nc.subscribe(">", cb=spy)  # everything on the bus, replies included
    async with control.operator() as op:
        await op.call("POST", "/v1/tenants", json={"id": t2, "name": "Table two",
                                                   "bot_token": second, "discord_edge": edge})
        await wait_for(lambda: changes == [2], 5)
        await op.call("PATCH", f"/v1/tenants/{t1}", json={"disabled": True})
        await wait_for(lambda: changes == [2, 1], 5)
        await op.call("PATCH", f"/v1/tenants/{t2}", json={"discord_edge": "default"})
        await wait_for(lambda: changes == [2, 1, 0], 5)
        await op.call("PATCH", f"/v1/tenants/{t1}", json={"name": "Renamed"})
    await asyncio.sleep(0.3)
    assert changes == [2, 1, 0]  # a name is not the edge's business
    for data in seen:  # no token ever crossed the bus in clear
        for secret in (first, second, elsewhere):
            assert secret.encode() not in data
    for log in control.log_path.read_text().splitlines():
        assert first not in log and second not in log
    await directory.close()


async def test_a_wrong_or_missing_edge_key_is_a_clear_error(nc, control):
    with pytest.raises(BotsUnavailable, match="NATS_EDGE_KEY differs"):
        await BotDirectory(nc, "default", new_secret_key()).fetch()
    with pytest.raises(BotsUnavailable, match="NATS_EDGE_KEY is not set"):
        await BotDirectory(nc, "default", "").fetch()


async def test_a_token_session_control_cannot_open_leaves_the_other_bots_running(nc, control,
                                                                                 pg_dsn):
    import psycopg

    edge = "e" + uuid.uuid4().hex[:8]
    good, broken = f"g{uuid.uuid4().hex[:8]}", f"x{uuid.uuid4().hex[:8]}"
    async with control.operator() as op:
        for tenant in (good, broken):
            await op.call("POST", "/v1/tenants", json={"id": tenant, "name": tenant,
                                                       "bot_token": token(),
                                                       "discord_edge": edge})
    with psycopg.connect(pg_dsn) as conn:  # sealed with a key session-control no longer has
        conn.execute("UPDATE tenants SET bot_token_encrypted = %s WHERE id = %s",
                     (b"gAAAAA-not-a-token-of-ours", broken))
    bots = await BotDirectory(nc, edge, EDGE_KEY).fetch()
    assert [b.tenant for b in bots] == [good]
    assert f'"tenant": "{broken}"' in control.log_path.read_text()
