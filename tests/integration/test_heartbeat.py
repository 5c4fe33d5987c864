"""Heartbeats in the JetStream KV bucket against a real nats-server: put, poke, graceful
delete, expiry after a crash, and failures that never stop the publisher."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js.errors import KeyNotFoundError

from glyphoxa_bus import heartbeat as hb
from glyphoxa_bus.heartbeat import HeartbeatPublisher, heartbeating, read_heartbeats
from glyphoxa_bus.streams import HEARTBEAT_BUCKET, ensure_heartbeat_bucket
from tests.support.service import wait_for

pytestmark = pytest.mark.integration


async def beats_by_key(js) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {hb.heartbeat_key(b.role, b.replica): b for b in await read_heartbeats(js)}


async def test_put_at_once_poke_and_delete_on_stop(nc):
    js = nc.jetstream()
    assert await read_heartbeats(js) == []  # no bucket yet: nobody is alive
    sessions = ["t1.s1"]
    publisher = HeartbeatPublisher(nc, "stt", "stt-host.example:42", lambda: list(sessions),
                                   interval_s=30, ttl_s=60, capacity=8)
    assert publisher.key == "stt.stt-host_example_42"
    async with heartbeating(publisher):
        await wait_for(lambda: _has(js, publisher.key), 5)
        [beat] = await read_heartbeats(js)
        assert (beat.role, beat.replica, beat.sessions, beat.capacity) == (
            "stt", "stt-host.example:42", ["t1.s1"], 8)
        assert 0 < beat.started_ns <= beat.at_ns

        sessions.append("t1.s2")
        publisher.poke()  # not the 30 s interval: at once
        await wait_for(lambda: _sessions_are(js, publisher.key, ["t1.s1", "t1.s2"]), 2)
    kv = await js.key_value(HEARTBEAT_BUCKET)
    with pytest.raises(KeyNotFoundError):
        await kv.get(publisher.key)
    assert await read_heartbeats(js) == []


async def test_a_crashed_replica_expires_after_the_ttl(nc):
    js = nc.jetstream()
    crashed = HeartbeatPublisher(nc, "tts", "tts-1", lambda: ["t1.s1"], interval_s=0.2, ttl_s=1.0)
    alive = HeartbeatPublisher(nc, "tts", "tts-2", lambda: [], interval_s=0.2, ttl_s=1.0)
    crash = asyncio.create_task(crashed.run())
    async with heartbeating(alive):
        await wait_for(lambda: _has(js, crashed.key), 5)
        await wait_for(lambda: _has(js, alive.key), 5)
        crash.cancel()  # dies without a goodbye: its key is left to expire
        with contextlib.suppress(asyncio.CancelledError):
            await crash
        assert crashed.key in await beats_by_key(js)
        await wait_for(lambda: _gone(js, crashed.key), 3)
        # the live one keeps putting (read until settled: a CI run once read the crashed
        # key again just after a read without it, while the server was expiring it)
        await wait_for(lambda: _keys_are(js, {alive.key}), 5)


async def test_read_skips_malformed_and_deleted_entries(nc):
    js = nc.jetstream()
    kv = await ensure_heartbeat_bucket(js, ttl_s=30)
    await kv.put("stt.garbage", b'{"role": "stt"')
    await kv.put("vad.gone", b"{}")
    await kv.delete("vad.gone")
    publisher = HeartbeatPublisher(nc, "edge", "scene-7", lambda: ["t1.s1"], interval_s=5,
                                   ttl_s=30)
    async with heartbeating(publisher):
        await wait_for(lambda: _has(js, publisher.key), 5)
        assert [b.replica for b in await read_heartbeats(js)] == ["scene-7"]


async def test_a_failed_put_is_logged_and_retried_at_the_next_tick(nc, monkeypatch, caplog):
    real = hb.ensure_heartbeat_bucket
    failures = [RuntimeError("nats is down")] * 2

    async def flaky(js, ttl_s):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return await real(js, ttl_s)

    monkeypatch.setattr(hb, "ensure_heartbeat_bucket", flaky)
    publisher = HeartbeatPublisher(nc, "vad", "vad-1", lambda: [], interval_s=0.1, ttl_s=5)
    async with heartbeating(publisher):
        await wait_for(lambda: _has(nc.jetstream(), publisher.key), 5)
    warnings = [r for r in caplog.records if "heartbeat put failed" in r.getMessage()]
    assert len(warnings) == 1 and "nats is down" in warnings[0].getMessage()


async def _has(js, key: str) -> bool:  # type: ignore[no-untyped-def]
    return key in await beats_by_key(js)


async def _gone(js, key: str) -> bool:  # type: ignore[no-untyped-def]
    return key not in await beats_by_key(js)


async def _keys_are(js, keys: set[str]) -> bool:  # type: ignore[no-untyped-def]
    return set(await beats_by_key(js)) == keys


async def _sessions_are(js, key: str, sessions: list[str]) -> bool:  # type: ignore[no-untyped-def]
    beat = (await beats_by_key(js)).get(key)
    return beat is not None and beat.sessions == sessions  # type: ignore[attr-defined]


async def test_the_bucket_is_created_once_and_keeps_its_ttl(nc, caplog):
    js = nc.jetstream()
    first = await ensure_heartbeat_bucket(js, ttl_s=6)
    again = await ensure_heartbeat_bucket(js, ttl_s=6)
    status = await again.status()
    assert (status.ttl, status.history) == (6, 1)
    assert status.stream_info.config.storage == "file"
    await ensure_heartbeat_bucket(js, ttl_s=9)  # a process configured differently
    assert (await first.status()).ttl == 6
    assert "heartbeat bucket has ttl 6.0 s, not the configured 9.0 s" in caplog.text


async def test_the_view_follows_puts_deletes_and_expiry_from_one_watch(nc):
    js = nc.jetstream()
    view = await hb.HeartbeatView(js, ttl_s=1.0).start()
    crashed = HeartbeatPublisher(nc, "stt", "stt-1", lambda: ["t1.s1"], interval_s=0.2, ttl_s=1.0)
    leaving = HeartbeatPublisher(nc, "edge", "scene-1", lambda: ["t1.s1"], interval_s=0.2, ttl_s=1.0)
    crash = asyncio.create_task(crashed.run())
    try:
        async with heartbeating(leaving):
            await wait_for(lambda: {b.replica for b in view.beats()} == {"stt-1", "scene-1"}, 5)
        # deleted on a graceful stop: the delete marker reaches the watch a moment later
        await wait_for(lambda: {b.replica for b in view.beats()} == {"stt-1"}, 2)
        crash.cancel()  # no goodbye: no marker in the stream, the view drops it by age
        with contextlib.suppress(asyncio.CancelledError):
            await crash
        await wait_for(lambda: view.beats() == [], 3)
    finally:
        crash.cancel()
        await view.stop()
