"""A tenant's stored provider keys reach a stage sealed, over request/reply, from a real
session-control process; nothing else can open them, and every failure falls back to the
stage's configured keys."""

from __future__ import annotations

import asyncio
import logging
import uuid

import nats
import pytest

from glyphoxa_cli.processes import NatsServer
from glyphoxa_events.subjects import api_subject
from glyphoxa_runtime.tenant_keys import VERB, TenantSecrets
from glyphoxa_session_control.crypto import new_secret_key
from tests.support.control import ControlProcess, module_control

pytestmark = pytest.mark.integration

BUS_KEY = new_secret_key()
GEMINI_KEY = "AIzaSy-tenant-own-gemini-" + uuid.uuid4().hex


control, nc = module_control("ctl", {"NATS_SECRETS_KEY": BUS_KEY})


def tenant_id() -> str:
    return "keys" + uuid.uuid4().hex[:8]


async def test_a_stage_gets_the_tenants_stored_key_sealed(control: ControlProcess, nc) -> None:  # type: ignore[no-untyped-def]
    tenant = tenant_id()
    client = await control.new_tenant(tenant, campaign_yaml=None)
    async with client:
        await client.call("PUT", "/v1/secrets/gemini", json={"value": GEMINI_KEY})
    raw: list[bytes] = []

    async def keep(msg) -> None:  # type: ignore[no-untyped-def]
        raw.append(msg.data)

    spy = await nc.subscribe("_INBOX.>", cb=keep)

    secrets = TenantSecrets(nc, BUS_KEY, "npc-brain")
    assert await secrets.get(tenant, "gemini") == GEMINI_KEY
    assert await secrets.get(tenant, "deepgram") is None  # not stored: the configured key
    await nc.flush()
    await spy.unsubscribe()
    assert raw, "the spy saw no reply"
    assert all(GEMINI_KEY.encode() not in body for body in raw)  # sealed on the wire


async def test_answers_are_cached_and_a_rotation_arrives_after_the_ttl(control, nc) -> None:  # type: ignore[no-untyped-def]
    tenant = tenant_id()
    client = await control.new_tenant(tenant, campaign_yaml=None)
    secrets = TenantSecrets(nc, BUS_KEY, "tts", ttl_s=0.5)
    async with client:
        await client.call("PUT", "/v1/secrets/elevenlabs", json={"value": "sk_first_" + tenant})
        assert await secrets.get(tenant, "elevenlabs") == "sk_first_" + tenant
        await client.call("PUT", "/v1/secrets/elevenlabs", json={"value": "sk_second_" + tenant})
    assert await secrets.get(tenant, "elevenlabs") == "sk_first_" + tenant  # cached
    await asyncio.sleep(0.6)
    assert await secrets.get(tenant, "elevenlabs") == "sk_second_" + tenant


async def test_a_stage_with_another_key_cannot_open_them(control, nc, caplog) -> None:  # type: ignore[no-untyped-def]
    tenant = tenant_id()
    client = await control.new_tenant(tenant, campaign_yaml=None)
    async with client:
        await client.call("PUT", "/v1/secrets/gemini", json={"value": GEMINI_KEY})
    with caplog.at_level(logging.INFO, logger="glyphoxa.secrets"):
        assert await TenantSecrets(nc, new_secret_key(), "stt").get(tenant, "gemini") is None
    assert "different NATS_SECRETS_KEY" in caplog.text
    assert GEMINI_KEY not in caplog.text


async def test_unknown_and_disabled_tenants_and_bad_requests_are_refused(control, nc, caplog) -> None:  # type: ignore[no-untyped-def]
    secrets = TenantSecrets(nc, BUS_KEY, "stt")
    with caplog.at_level(logging.WARNING, logger="glyphoxa.secrets"):
        assert await secrets.get("nosuchtenant", "gemini") is None
    assert "no tenant 'nosuchtenant'" in caplog.text

    tenant = tenant_id()
    client = await control.new_tenant(tenant, campaign_yaml=None)
    async with client:
        await client.call("PUT", "/v1/secrets/gemini", json={"value": GEMINI_KEY})
    async with control.operator() as op:
        await op.call("PATCH", f"/v1/tenants/{tenant}", json={"disabled": True})
    assert await TenantSecrets(nc, BUS_KEY, "stt").get(tenant, "gemini") is None
    assert "is disabled" in caplog.text

    reply = await nc.request(api_subject(VERB, "stt"), b'{"tenant": "a.b", "names": ["gemini"], "stage": "x"}',
                             timeout=5)
    assert b"invalid request: tenant" in reply.data
    reply = await nc.request(api_subject(VERB, "stt"), b"not json", timeout=5)
    assert b'"ok":false' in reply.data


async def test_without_session_control_the_stage_uses_its_configured_keys(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    lonely = NatsServer(tmp_path).start()  # nobody answers on this one
    nc = await nats.connect(lonely.url)
    try:
        with caplog.at_level(logging.WARNING, logger="glyphoxa.secrets"):
            secrets = TenantSecrets(nc, BUS_KEY, "stt", timeout_s=0.3)
            assert await secrets.get("sometenant", "deepgram") is None
        assert "tenant keys unavailable" in caplog.text
        assert await TenantSecrets(nc, None, "stt").get("sometenant", "deepgram") is None  # off
    finally:
        await nc.drain()
        lonely.stop()
