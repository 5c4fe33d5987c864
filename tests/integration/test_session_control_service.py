"""session-control through its real entry point: start/stop/get, claims, bad requests."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events.api import ApiReply, StartSession, StopSession
from glyphoxa_events.models import SessionStarted, SessionStopped, parse_control
from glyphoxa_events.subjects import SessionSubjects, api_subject

pytestmark = pytest.mark.integration
CAMPAIGN = Campaign(name="Forge", npcs=[Npc(name="Greta", persona="A blacksmith.")])


@pytest.fixture
def session_control(nats_url, tmp_path):
    proc = ServiceProcess("session-control", {"NATS_URL": nats_url}, tmp_path / "sc.log").start()
    proc.wait_ready(30)
    yield proc
    proc.stop()


async def _call(nc, verb: str, body: bytes) -> ApiReply:
    msg = await nc.request(api_subject(verb), body, timeout=5)
    return ApiReply.model_validate_json(msg.data)


async def test_start_publishes_started_event_and_claims_then_stop(nc, tenant, session_control):
    reply = await _call(nc, "session.start",
                        StartSession(tenant=tenant, campaign=CAMPAIGN).model_dump_json().encode())
    assert reply.ok and reply.session and reply.session.state == "active"
    session = reply.session.session
    subjects = SessionSubjects(tenant, session)
    js = nc.jetstream()
    sub = await js.subscribe(subjects.ctl(">"), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    started = parse_control((await sub.next_msg(3)).data)
    assert isinstance(started, SessionStarted) and started.campaign.npcs[0].name == "Greta"

    info = await js.stream_info("GLX_WORK", subjects_filter=f"glxwork.*.{tenant}.{session}")
    assert sorted(info.state.subjects or {}) == sorted(
        f"glxwork.{stage}.{tenant}.{session}" for stage in ("vad", "stt", "npc-brain", "tts"))

    again = await _call(nc, "session.start", StartSession(
        tenant=tenant, session=session, campaign=CAMPAIGN).model_dump_json().encode())
    assert not again.ok and "already exists" in again.error

    stop = await _call(nc, "session.stop", StopSession(tenant=tenant, session=session).model_dump_json().encode())
    assert stop.ok and stop.session.state == "ended"
    stopped = parse_control((await sub.next_msg(3)).data)
    assert isinstance(stopped, SessionStopped)
    got = await _call(nc, "session.get", json.dumps({"tenant": tenant, "session": session}).encode())
    assert got.ok and got.session.state == "ended"
    await sub.unsubscribe()


@pytest.mark.parametrize("body, fragment", [
    (b"not json", "invalid request"),
    (b'{"tenant": "Bad.Tenant", "campaign": {"name": "x", "npcs": [{"name": "A", "persona": "p"}]}}',
     "tenant"),
    (b'{"tenant": "ok", "campaign": {"name": "x", "npcs": []}}', "npcs"),
    (b'{"tenant": "ok", "campaign": {"name": "x", "npcs": [{"name": "A", "persona": "p"}]}, "x": 1}', "x"),
    (b"{" + b" " * 70000 + b"}", "larger than"),
])
async def test_bad_requests_get_clear_errors_and_service_keeps_serving(nc, tenant, session_control,
                                                                      body, fragment):
    reply = await _call(nc, "session.start", body)
    assert not reply.ok and fragment in reply.error
    ok = await _call(nc, "session.start", StartSession(tenant=tenant, campaign=CAMPAIGN).model_dump_json().encode())
    assert ok.ok
    log = session_control.log_path.read_text()
    assert '"level": "error"' not in log


async def test_unknown_session_is_a_clear_error(nc, tenant, session_control):
    reply = await _call(nc, "session.stop", StopSession(tenant=tenant, session="nope").model_dump_json().encode())
    assert not reply.ok and "no session 'nope'" in reply.error


async def test_metrics_and_health_endpoints(session_control):
    async def get(path: str) -> tuple[str, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", session_control.metrics_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        data = (await reader.read()).decode()
        writer.close()
        return data.split("\r\n", 1)[0], data.split("\r\n\r\n", 1)[1]

    status, body = await get("/healthz")
    assert "200" in status
    status, body = await get("/readyz")
    assert "200" in status and json.loads(body)["ready"] is True
    status, body = await get("/metrics")
    assert "glyphoxa_session_control_requests_total" in body
