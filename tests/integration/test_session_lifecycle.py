"""session-control's lifecycle through its real entry point, against real PostgreSQL and NATS:
the bus API, liveness (edge and stage heartbeats, takeover, zombies), the recorder's
idempotence, and a kill -9 restart during live sessions."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_bus.connection import principal
from glyphoxa_events.api import ApiReply, StartSession, StopSession
from glyphoxa_events.models import (
    FailureStage,
    NameMatch,
    RouteKind,
    RoutingExplained,
    SessionStarted,
    SessionStopped,
    TurnEnded,
    TurnFailure,
    TurnLatency,
    Usage,
    parse_control,
)
from glyphoxa_events.subjects import STAGES, SessionSubjects, api_subject
from tests.support.control import ControlProcess, holders
from tests.support.service import metric, wait_for

pytestmark = pytest.mark.integration

FAST = {"SESSION_CONTROL_LIVENESS_GRACE_S": "3", "SESSION_CONTROL_LIVENESS_INTERVAL_S": "0.3",
        "SESSION_CONTROL_ENDING_TIMEOUT_S": "3", "NATS_HEARTBEAT_TTL_S": "1.0",
        "NATS_HEARTBEAT_INTERVAL_S": "0.3"}


@pytest.fixture
async def control(nats_url, pg_dsn, tmp_path):
    proc = ControlProcess(nats_url, pg_dsn, tmp_path / "sc.log", env=FAST).start()
    yield proc
    proc.stop()


async def _call(nc, verb: str, body) -> ApiReply:  # type: ignore[no-untyped-def]
    msg = await nc.request(api_subject(verb, principal(nc)), body.model_dump_json().encode(), timeout=5)
    return ApiReply.model_validate_json(msg.data)


async def _state(client, session: str) -> str:  # type: ignore[no-untyped-def]
    return (await client.session(session))["state"]


async def test_bus_api_starts_a_stored_campaign_publishes_claims_and_stops(nc, tenant, control):
    client = await control.new_tenant(tenant)
    reply = await _call(nc, "session.start", StartSession(tenant=tenant, campaign="forge", edge="sim"))
    assert reply.ok and reply.session and reply.session.state == "active", reply
    sid = reply.session.session
    subjects = SessionSubjects(tenant, sid)
    js = nc.jetstream()
    sub = await js.subscribe(subjects.ctl("session.*"), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    started = parse_control((await sub.next_msg(3)).data)
    assert isinstance(started, SessionStarted) and [n.name for n in started.campaign.npcs] == ["Greta", "Tobias"]
    info = await js.stream_info("GLX_WORK", subjects_filter=f"glxwork.*.{tenant}.{sid}")
    assert info.state.subjects == {f"glxwork.{stage}.{tenant}.{sid}": 1 for stage in STAGES}

    again = await _call(nc, "session.start", StartSession(tenant=tenant, campaign="forge", session=sid))
    assert not again.ok and "already exists" in again.error
    unknown = await _call(nc, "session.start", StartSession(tenant=tenant, campaign="nope"))
    assert not unknown.ok and "no campaign 'nope'" in unknown.error
    stranger = await _call(nc, "session.start", StartSession(tenant="t-unknown", campaign="forge"))
    assert not stranger.ok and stranger.error == "no tenant 't-unknown'"
    bad = await nc.request(api_subject("session.start", principal(nc)), b'{"tenant": "Bad Tenant!"}', timeout=5)
    assert "invalid request: tenant" in ApiReply.model_validate_json(bad.data).error

    stop = await _call(nc, "session.stop", StopSession(tenant=tenant, session=sid, reason="gm went home"))
    assert stop.ok and stop.session.state in ("ending", "ended")
    stopped = parse_control((await sub.next_msg(3)).data)
    assert isinstance(stopped, SessionStopped) and stopped.reason == "gm went home"
    await wait_for(lambda: _ended(client, sid), 10)
    await sub.unsubscribe()
    await client.close()


async def _ended(client, sid: str) -> bool:  # type: ignore[no-untyped-def]
    return await _state(client, sid) == "ended"


async def _ending(client, sid: str) -> bool:  # type: ignore[no-untyped-def]
    return await _state(client, sid) in ("ending", "ended")


async def test_edge_that_stops_heartbeating_ends_the_session_with_the_reason(nc, tenant, control):
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    async with holders(nc, [f"{tenant}.{sid}"]) as tasks:
        await asyncio.sleep(4)  # longer than the grace: held by everyone, so it stays
        session = await client.session(sid)
        assert session["state"] == "active"
        assert {h["role"]: h["replica"] for h in session["holders"]} == {
            role: f"{role}-r1" for role in (*STAGES, "edge")}
        tasks["edge"].cancel()  # the edge dies: no delete, its key expires
        died = time.monotonic()
        await wait_for(lambda: _ending(client, sid), 15)
        assert time.monotonic() - died < 3 + 1.0 + 2.0  # grace + TTL + a check or two
        # the stages still hold it (fakes here ignore the stop): ended after the ending timeout
        await wait_for(lambda: _ended(client, sid), 10)
    session = await client.session(sid)
    ending = [t for t in session["transitions"] if t["to_state"] == "ending"][0]
    assert "no live edge for 3 s" in ending["reason"]
    assert metric(control.proc.metrics_port, "glyphoxa_session_control_sessions_ended_by_liveness_total",
                  role="edge") == 1
    await client.close()


async def test_a_stage_claim_taken_over_in_time_keeps_the_session(nc, tenant, control):
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    key = [f"{tenant}.{sid}"]
    async with holders(nc, key) as tasks:
        await asyncio.sleep(1)
        tasks["stt"].cancel()  # stt replica r1 dies
        await asyncio.sleep(1.5)  # noticed (its heartbeat expired) ...
        noticed = {h["role"]: h["replica"] for h in (await client.session(sid))["holders"]}
        assert noticed["stt"] is None
        async with holders(nc, key, roles=("stt",), name="r2"):  # ... and taken over by r2
            await asyncio.sleep(4)
            session = await client.session(sid)
    assert session["state"] == "active"
    assert {h["role"]: h["replica"] for h in session["holders"]}["stt"] == "stt-r2"
    await client.close()


async def test_replicas_still_serving_an_ended_session_are_told_to_stop_again(nc, tenant, control):
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    await client.stop_session(sid)
    await wait_for(lambda: _ended(client, sid), 10)
    subjects = SessionSubjects(tenant, sid)
    sub = await nc.jetstream().subscribe(subjects.ctl("session.stopped"), ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)
    assert isinstance(parse_control((await sub.next_msg(3)).data), SessionStopped)
    async with holders(nc, [f"{tenant}.{sid}"], roles=("tts",), name="zombie"):
        again = parse_control((await sub.next_msg(5)).data)
    assert isinstance(again, SessionStopped) and again.reason == "the session has ended"
    await sub.unsubscribe()
    await client.close()


async def test_usage_and_turns_are_recorded_once_and_bad_events_are_dropped(nc, tenant, control):
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    subjects = SessionSubjects(tenant, sid)
    js = nc.jetstream()
    usage = Usage(key="stt:u1", metric="stt_audio_seconds", amount=2.5, provider="whisper", stage="stt")
    for attempt in range(3):  # redelivered / republished after the duplicate window: new msg ids
        await js.publish(subjects.usage("stt"), usage.to_bytes(), headers={"Nats-Msg-Id": f"u{attempt}"})
    await js.publish(subjects.usage("stt"), b"{not json")
    await js.publish(subjects.usage("stt"), Usage(key="x", metric="tts_characters", amount=1,
                                                  provider="p", stage="tts").to_bytes().replace(b"tts_characters", b"gold"))
    turn = TurnEnded(turn_id="alex-1", speaker="alex", transcript="Greta, a sword please",
                     npc="greta", outcome="answered", latency=TurnLatency(speech_end_ns=time.time_ns()))
    for _ in range(2):
        await js.publish(subjects.ctl("turn"), turn.to_bytes())
    await js.publish(SessionSubjects(tenant, "no-such-session").usage("stt"), usage.to_bytes())

    async def recorded() -> bool:
        return (await client.usage())["stt_audio_seconds"] > 0 and len(await client.turns(sid)) == 1
    await wait_for(recorded, 10)
    await asyncio.sleep(1)  # any double count would land now
    assert (await client.usage())["stt_audio_seconds"] == 2.5
    assert [t["turn_id"] for t in await client.turns(sid)] == ["alex-1"]
    assert [(line["role"], line["text"]) for line in await client.transcript(sid)] == [
        ("player", "Greta, a sword please")]
    port = control.proc.metrics_port
    await wait_for(lambda: metric(port, "glyphoxa_session_control_recorded_events_total",
                                  result="malformed") == 2, 5)
    await wait_for(lambda: metric(port, "glyphoxa_session_control_recorded_events_total",
                                  result="unknown_session") == 1, 5)
    await client.close()


async def test_each_turns_routing_and_failure_are_recorded_and_returned(nc, tenant, control):
    """The recorder stores TurnEnded.routing and .failure (migration 0007); the turns and
    transcript views return them; a turn event from before them is stored without."""
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    js, subjects, now = nc.jetstream(), SessionSubjects(tenant, sid), time.time_ns()
    routing = RoutingExplained(kind=RouteKind.name_end, npc="greta", name="Greta",
                               name_kind="name", matched="Gretta", word=4, start=22, end=28,
                               match=NameMatch.fuzzy, score=90.9,
                               why="named at the end: 'Gretta' (fuzzy 91 for 'Greta')")
    failure = TurnFailure(stage=FailureStage.llm, provider="gemini",
                          error="gemini: no answer within 8.0 s", retryable=True)
    failed = TurnEnded(turn_id="alex-1", speaker="alex", transcript="How much for it, Gretta?",
                       npc="greta", outcome="timed_out", reason=failure.error, routing=routing,
                       failure=failure, latency=TurnLatency(speech_end_ns=now))
    mention = RoutingExplained(kind=RouteKind.table_talk, mentioned="greta", name="Greta",
                               matched="Greta", word=0, start=0, end=5, match=NameMatch.exact,
                               score=100, last_npc="greta", since_last_ms=4000, window_ms=30000,
                               why="talks about Greta, not to: 'Greta' is followed by 'said'")
    table = TurnEnded(turn_id="sam-2", speaker="sam", transcript="Greta said it was cursed.",
                      outcome="not_addressed", reason=mention.why, routing=mention,
                      latency=TurnLatency(speech_end_ns=now + 4_000_000_000))
    old = (b'{"type":"turn","turn_id":"jo-3","speaker":"jo","transcript":"Hmm.",'
           b'"outcome":"not_addressed","latency":{"speech_end_ns":%d}}' % (now + 8_000_000_000))
    for body in (failed.to_bytes(), table.to_bytes(), old):
        await js.publish(subjects.ctl("turn"), body)

    async def recorded() -> bool:
        return len(await client.turns(sid)) == 3
    await wait_for(recorded, 10)
    rows = {t["turn_id"]: t for t in await client.turns(sid)}
    assert RoutingExplained.model_validate(rows["alex-1"]["routing"]) == routing
    assert TurnFailure.model_validate(rows["alex-1"]["failure"]) == failure
    assert RoutingExplained.model_validate(rows["sam-2"]["routing"]) == mention
    assert rows["sam-2"]["failure"] is None
    assert (rows["jo-3"]["routing"], rows["jo-3"]["failure"]) == (None, None)
    lines = {line["turn_id"]: line for line in await client.transcript(sid)}
    assert (lines["alex-1"]["npc"], lines["alex-1"]["outcome"]) == ("greta", "timed_out")
    assert RoutingExplained.model_validate(lines["alex-1"]["routing"]) == routing
    assert lines["sam-2"]["routing"]["mentioned"] == "greta" and lines["jo-3"]["routing"] is None
    await client.close()


async def test_kill9_restart_loses_nothing_and_finishes_an_interrupted_start(nc, tenant, control, pg_dsn):
    client = await control.new_tenant(tenant, tier={"max_concurrent_sessions": 5, "monthly_session_hours": 10})
    sids = [(await client.start_session("forge", edge="sim"))["id"] for _ in range(2)]
    keys = [f"{tenant}.{s}" for s in sids]
    js = nc.jetstream()
    async with holders(nc, keys):
        await asyncio.sleep(1)
        before = {s: await client.session(s) for s in sids}
        control.kill9()
        # while it is down: usage keeps flowing, and a start is caught half-way (pending, no claims)
        usage = Usage(key="tts:t1:0", metric="tts_characters", amount=42, provider="piper", stage="tts")
        await js.publish(SessionSubjects(tenant, sids[0]).usage("tts"), usage.to_bytes())
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO sessions (tenant_id, id, campaign_id, campaign, edge) SELECT %s,"
                         " 'half-started', 'forge', campaign, 'sim' FROM sessions WHERE tenant_id = %s"
                         " AND id = %s", (tenant, tenant, sids[0]))
        await asyncio.sleep(2)
        control.start()
        async with holders(nc, [f"{tenant}.half-started"], name="r9"):
            await asyncio.sleep(4)  # beyond the grace: nobody ended the live sessions
            for sid in sids:
                after = await client.session(sid)
                assert after["state"] == "active"
                assert after["transitions"] == before[sid]["transitions"]
            await wait_for(lambda: _usage_is(client, "tts_characters", 42), 10)
            half = await client.session("half-started")
            assert half["state"] == "active"
            assert half["transitions"][-1]["reason"] == "start completed after a session-control restart"
            info = await js.stream_info("GLX_WORK", subjects_filter=f"glxwork.*.{tenant}.half-started")
            assert info.state.subjects == {f"glxwork.{st}.{tenant}.half-started": 1 for st in STAGES}
            claims = await js.stream_info("GLX_WORK", subjects_filter=f"glxwork.*.{tenant}.{sids[0]}")
            assert set((claims.state.subjects or {}).values()) == {1}  # none published twice
    await client.close()


async def _usage_is(client, field: str, value: float) -> bool:  # type: ignore[no-untyped-def]
    return (await client.usage())[field] == value


async def test_a_record_a_killed_recorder_had_fetched_is_stored_within_the_ack_wait(
        nc, tenant, control):
    """session-control killed between fetching a turn and acking it (the kill lands there
    often: the recorder takes each turn as it ends): the next one stores it within the
    recorder's ack wait, not half a minute later."""
    from glyphoxa_session_control.recorder import ACK_WAIT_S

    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    control.kill9()
    js = nc.jetstream()
    turn = TurnEnded(turn_id="alex-7", speaker="alex", transcript="Greta, the blade?",
                     npc="greta", outcome="answered", latency=TurnLatency(speech_end_ns=time.time_ns()))
    await js.publish(SessionSubjects(tenant, sid).ctl("turn"), turn.to_bytes())
    crashed = await js.pull_subscribe_bind("session-control-ctl", stream="GLX_CTL")
    [fetched] = await crashed.fetch(1, timeout=5)  # delivered, never acked: the crash
    assert TurnEnded.model_validate_json(fetched.data).turn_id == "alex-7"
    await crashed.unsubscribe()
    control.start()

    async def stored() -> bool:
        return [t["turn_id"] for t in await client.turns(sid)] == ["alex-7"]
    await wait_for(stored, ACK_WAIT_S + 3)  # redelivered once the ack wait ran out
    await client.close()


async def test_events_that_can_never_be_stored_are_parked_and_the_recorder_moves_on(
        nc, tenant, control, pg_dsn):
    """Turns whose text PostgreSQL refuses (NUL) arrive among good ones: each bad one is parked
    with its reason and acked, every good one is recorded, and nothing is retried forever."""
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    js = nc.jetstream()
    subject = SessionSubjects(tenant, sid).ctl("turn")

    def turn(n: int, text: str) -> bytes:
        return TurnEnded(turn_id=f"alex-{n}", speaker="alex", transcript=text, npc="greta",
                         outcome="answered",
                         latency=TurnLatency(speech_end_ns=time.time_ns())).to_bytes()
    for n in range(40):
        await js.publish(subject, turn(n, f"Greta\x00 {n}" if n % 2 else f"Greta, line {n}"))

    async def recorded() -> bool:
        return len(await client.turns(sid)) == 20
    await wait_for(recorded, 10)
    assert sorted(t["turn_id"] for t in await client.turns(sid)) == sorted(
        f"alex-{n}" for n in range(0, 40, 2))
    port = control.proc.metrics_port
    await wait_for(lambda: metric(port, "glyphoxa_session_control_recorded_events_total",
                                  result="refused") == 20, 5)
    def parked_rows() -> list:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            return conn.execute("SELECT subject, reason, data FROM parked_events "
                                "WHERE subject = %s", (subject,)).fetchall()
    # (the counter may run ahead of the rows' commit on a loaded machine)
    await wait_for(lambda: len(parked_rows()) == 20, 10)
    parked = parked_rows()
    assert len(parked) == 20 and all("DataError" in r[1] or "Character" in r[1] for r in parked)
    assert all(b"\\u0000" in r[2] for r in parked)  # the event kept as it came
    await asyncio.sleep(3)  # beyond the retry delay: nothing comes back
    assert metric(port, "glyphoxa_session_control_recorded_events_total", result="retry") == 0
    await client.close()
