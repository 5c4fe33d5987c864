"""What session-control's stream watch reports for /metrics, against a real nats-server:
each stage's claims lag as KEDA reads it, and the replayable streams' retention
(NATS_STREAM_MAX_AGE_S, NATS_STREAM_MAX_BYTES) and how far back they reach."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from glyphoxa_bus.auth import OPERATOR, complete_passwords, server_config_for
from glyphoxa_bus.claims import publish_claims
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.streams import MEDIA, WORK, claims_consumer_name, ensure_claims_consumer
from glyphoxa_cli.processes import NatsServer
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_session_control.streamwatch import StreamWatch

pytestmark = pytest.mark.integration


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(f"glyphoxa_session_control_{name}", labels)


async def test_claims_lag_per_stage_as_keda_reads_it(nats_url, tenant):
    nc = await connect(BusSettings(url=nats_url), name="pytest")
    try:
        for i in range(3):
            await publish_claims(nc, tenant, f"s{i}", ["stt", "tts"])
        js = nc.jetstream()
        await ensure_claims_consumer(js, "tts", lease_s=10)
        psub = await js.pull_subscribe_bind(claims_consumer_name("tts"), stream=WORK)
        [held] = await psub.fetch(1, timeout=2)  # a tts replica holds one session
        await StreamWatch(nc).poll()
        # stt has no consumer yet (no replica ever started): its claims wait in the stream
        assert gauge("claims_pending", stage="stt") == 3
        assert gauge("claims_held", stage="stt") == 0
        assert gauge("claims_pending", stage="tts") == 2
        assert gauge("claims_held", stage="tts") == 1
        assert gauge("claims_pending", stage="vad") == 0
        await held.ack()  # the session ended
        await StreamWatch(nc).poll()
        assert gauge("claims_held", stage="tts") == 0 and gauge("claims_pending", stage="tts") == 2
        await psub.unsubscribe()
    finally:
        await nc.close()


async def test_retention_settings_reach_the_streams_and_old_sessions_age_out(
        nats_url, tenant, monkeypatch):
    monkeypatch.setenv("NATS_STREAM_MAX_AGE_S", "2")
    monkeypatch.setenv("NATS_STREAM_MAX_BYTES", str(64 * 1024**2))
    nc = await connect(BusSettings(url=nats_url), name="pytest")  # declares the streams
    try:
        info = await nc.jetstream().stream_info(MEDIA)
        assert info.config.max_age == 2 and info.config.max_bytes == 64 * 1024**2
        await nc.jetstream().publish(SessionSubjects(tenant, "s1").audio_in("robin"), b"\x00" * 100)
        watch = StreamWatch(nc)
        await watch.poll()
        assert gauge("stream_max_age_seconds", stream=MEDIA) == 2
        assert gauge("stream_limit_bytes", stream=MEDIA) == 64 * 1024**2
        assert gauge("stream_bytes", stream=MEDIA) > 100
        assert 0 <= gauge("stream_oldest_age_seconds", stream=MEDIA) < 2
        await asyncio.sleep(1.2)
        await watch.poll()
        assert 1 <= gauge("stream_oldest_age_seconds", stream=MEDIA) < 2.5
        for _ in range(40):  # past max_age the session is gone from the stream
            await asyncio.sleep(0.25)
            if (await nc.jetstream().stream_info(MEDIA)).state.messages == 0:
                break
        assert (await nc.jetstream().stream_info(MEDIA)).state.messages == 0
        await watch.poll()
        assert gauge("stream_bytes", stream=MEDIA) == 0
        assert gauge("stream_oldest_age_seconds", stream=MEDIA) == 0
    finally:
        await nc.close()


async def test_the_operators_tools_leave_the_deployments_retention(tmp_path, monkeypatch):
    """session-control declares the retention it is configured with; the operator's tools
    (scene player, replay, benchmarks) log in with their own defaults and must not shrink it
    (k8s/ keeps 8 GiB, a tool's default is 2 GiB), while the next session-control applies a
    changed NATS_STREAM_MAX_AGE_S to the existing streams."""
    passwords: dict[str, str] = {}
    complete_passwords(passwords)
    # the streams ask for 8 GiB each: JetStream's own limit is set, not taken from the free
    # disk (75% of it by default), so the test does not depend on how full the disk is
    (tmp_path / "auth.conf").write_text(server_config_for(passwords)
                                        + "\njetstream { max_file_store: 1TB }\n")
    server = NatsServer(tmp_path / "store", config=tmp_path / "auth.conf").start()

    async def declared_by(user: str, max_age_s: float, max_bytes: int) -> tuple[float, int]:
        settings = BusSettings(url=server.url, user=user, password=passwords[user],
                               stream_max_age_s=max_age_s, stream_max_bytes=max_bytes)
        nc = await connect(settings, name=f"pytest-{user}")
        try:
            info = await nc.jetstream().stream_info(MEDIA)
            return info.config.max_age, info.config.max_bytes
        finally:
            await nc.close()

    try:
        week, eight_gib = 7 * 24 * 3600.0, 8 * 1024**3
        assert await declared_by("session-control", week, eight_gib) == (week, eight_gib)
        assert await declared_by(OPERATOR, 24 * 3600.0, 2 * 1024**3) == (week, eight_gib)
        assert await declared_by("session-control", 2 * week, eight_gib) == (2 * week, eight_gib)
    finally:
        server.stop()
