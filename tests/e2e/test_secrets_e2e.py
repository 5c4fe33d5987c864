"""Secrets never leak: a sentinel bot token and provider key are planted, a whole session is
played (fake providers), and the sentinel is searched for in every log line, every message
of every stream (KV buckets included), every API response and every database row."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_campaign import load_campaign_file
from glyphoxa_cli.admin import AdminClient, SceneSessions
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.scenefile import load_scene
from glyphoxa_cli.stack import Stack
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE
from tests.support.pg import fresh_database

FAKES = {"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake"}


@pytest.fixture
def stack(pg_admin_dsn):
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-secrets-"))
    s = Stack(home, env=FAKES, pg_dsn=fresh_database(pg_admin_dsn)).start(progress=lambda m: None)
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


async def all_stream_messages(nc) -> list[bytes]:  # type: ignore[no-untyped-def]
    js, out = nc.jetstream(), []
    for info in await js.streams_info():
        state = info.state
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg(info.config.name, seq)
            except Exception:  # noqa: BLE001 - deleted (e.g. an acked claim, an expired key)
                continue
            out.append(msg.subject.encode() + b" " + repr(msg.headers).encode() + b" " + (msg.data or b""))
    return out


def all_database_rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        rows = []
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            rows += [r[0] for r in conn.execute(query).fetchall()]
    return rows


async def test_a_planted_secret_appears_nowhere(stack, tmp_path):
    bot_token = "SENTINEL-BOT-" + secrets.token_hex(8)
    api_key = "SENTINEL-KEY-" + secrets.token_hex(8)
    async with AdminClient(stack.api_url, stack.keys()["operator_key"]) as operator:
        tenant = await operator.call("POST", "/v1/tenants", json={
            "id": "vault", "name": "Vault", "bot_token": bot_token, "allowed_guild_ids": ["123"]})
        key = await operator.create_api_key("vault")
        responses = [str(tenant), str(await operator.call("GET", "/v1/tenants/vault")),
                     str(await operator.call("GET", "/v1/audit"))]
    client = AdminClient(stack.api_url, key)
    responses.append(str(await client.call("PUT", "/v1/secrets/gemini", json={"value": api_key})))
    responses.append(str(await client.call("GET", "/v1/secrets")))

    nc = await connect(BusSettings(url=stack.nats_url), name="secrets-test")
    try:
        door = SceneSessions(client, "vault", EXAMPLE_CAMPAIGN.read_text())
        player = ScenePlayer(nc, load_scene(EXAMPLE_SCENE), load_campaign_file(EXAMPLE_CAMPAIGN),
                             door, speed=4)
        await player.play()
        responses.append(str(await client.session(player.session)))
        messages = await all_stream_messages(nc)
    finally:
        await client.close()
        await nc.close()
    rows = all_database_rows(stack.pg_dsn or "")
    logs = "\n".join(stack.logs().values())

    assert player.collected.turns, "the session did not run"
    assert len(messages) > 100 and len(rows) > 20 and len(logs) > 1000  # the search saw data
    for sentinel in (bot_token, api_key):
        assert sentinel not in logs
        assert not [m for m in messages if sentinel.encode() in m]
        hex_form = sentinel.encode().hex()  # bytea columns print as hex
        assert not [r for r in rows if sentinel in r or hex_form in r]
        assert not [r for r in responses if sentinel in r]
