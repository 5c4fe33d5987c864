"""Hostile input the fuzz test (tests/e2e/test_fuzz_e2e.py) found mishandled, each on its
own: nothing may make a reader retry forever, go deaf, or log without bound (issue 13)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from prometheus_client import CollectorRegistry, Counter

from glyphoxa_bus.claims import LOGGED_MALFORMED, ClaimWorker, publish_claims
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_events.models import TurnEnded, TurnLatency
from glyphoxa_events.subjects import SessionSubjects
from tests.support.control import ControlProcess
from tests.support.rawnats import RawPublisher
from tests.support.service import metric, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def control(nats_url, pg_dsn, tmp_path):
    proc = ControlProcess(nats_url, pg_dsn, tmp_path / "sc.log").start()
    yield proc
    proc.stop()


def _recorded(control: ControlProcess, result: str) -> float:
    assert control.proc is not None
    return metric(control.proc.metrics_port, "glyphoxa_session_control_recorded_events_total",
                  result=result)


async def test_the_recorder_parks_a_flood_of_bad_events_once_each_and_logs_a_few(
        nc, tenant, control, tmp_path):
    """Turns on subjects whose tenant token holds a NUL (PostgreSQL takes no NUL in text, so
    parking them failed too, and they were retried every 2 s forever) among malformed usage:
    each one is parked and acked, the good turns around them are recorded, and the log shows
    the first 20 parked and then every 100th."""
    client = await control.new_tenant(tenant)
    sid = (await client.start_session("forge", edge="sim"))["id"]
    js = nc.jetstream()
    turn = TurnEnded(turn_id="alex-1", speaker="alex", transcript="Greta?", npc="greta",
                     outcome="answered", latency=TurnLatency(speech_end_ns=time.time_ns()))
    for n in range(30):
        await js.publish(f"glx.ro\x00bin{n}.s1.ctl.turn", turn.to_bytes())
    for n in range(170):
        await js.publish(SessionSubjects(tenant, sid).usage("stt"), json.dumps({"n": n}).encode())
    await js.publish(SessionSubjects(tenant, sid).ctl("turn"), turn.to_bytes())

    await wait_for(lambda: _recorded(control, "malformed") == 200, 20)
    assert [t["turn_id"] for t in await client.turns(sid)] == ["alex-1"]
    await asyncio.sleep(2.5)  # beyond the retry delay: nothing comes back
    assert _recorded(control, "retry") == 0
    logged = [json.loads(line) for line in (tmp_path / "sc.log").read_text().splitlines()
              if "parked an event" in line]
    assert len(logged) == 20 + 2  # the first 20, the 100th and the 200th
    assert [line["parked_so_far"] for line in logged[-2:]] == [100, 200]
    assert "ro\\0bin0" in logged[0]["subject"]
    await client.close()


async def test_a_subject_that_is_not_utf8_costs_a_connection_nothing(nats_url, tenant):
    """Any client may publish a subject that is not UTF-8, and the server delivers it: nats.py
    decoded it strictly in its read loop, which then ended, and the connection went deaf while
    it still looked connected. Our connection reads it with U+FFFD for the bad bytes (a subject
    no token matches) and goes on."""
    nc = await connect(BusSettings(url=nats_url), name="pytest-deaf", declare=False)
    got: list[str] = []

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(msg.subject)

    await nc.subscribe(f"{tenant}.>", cb=on_msg)
    await nc.flush()
    async with RawPublisher(nats_url) as raw:
        raw.publish(f"{tenant}.in.".encode() + b"\xff\xfeal", b"x")
        raw.publish(f"{tenant}.in.alex".encode(), b"y")
        await raw.flush()
    await wait_for(lambda: len(got) == 2, 5)
    assert got == [f"{tenant}.in.\ufffd\ufffdal", f"{tenant}.in.alex"]
    await nc.flush(timeout=2)  # still reading what the server says
    await nc.close()


async def test_malformed_claims_are_counted_and_logged_in_part(nc, tenant, caplog):
    """A flood of claims whose subjects are not ``glxwork.<stage>.<tenant>.<session>``: each
    is counted as the stage's rejected message (it was logged as an error and counted
    nowhere), a few are logged, and a good claim behind them is served."""
    rejected = Counter("glyphoxa_test_rejected_messages_total", "t", ["stage", "reason"],
                       registry=CollectorRegistry())
    served: list[str] = []

    async def run(subjects: SessionSubjects) -> None:
        served.append(subjects.session)

    worker = ClaimWorker(nc, "vad", run, capacity=2, lease_s=2.0, rejected=rejected)
    task = asyncio.create_task(worker.run())
    js = nc.jetstream()
    for n in range(210):
        tail = (tenant, f"{tenant}.s{n}.x", f"BAD.s{n}", f"{tenant}.s\u00fc{n}")[n % 4]
        await js.publish(f"glxwork.vad.{tail}", b"")
    await publish_claims(nc, tenant, "good", ["vad"])
    await wait_for(lambda: served == ["good"], 20)
    count = rejected.labels(stage="vad", reason="malformed_claim")
    assert count._value.get() == 210 == worker.malformed
    logged = [r for r in caplog.records if r.getMessage().startswith("dropping malformed claim")]
    assert len(logged) == LOGGED_MALFORMED + 2 and {r.levelname for r in logged} == {"WARNING"}
    await worker.shutdown()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
