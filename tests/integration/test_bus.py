"""The bus library against a real nats-server: ordering, de-duplication, claims, ack floor."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from glyphoxa_bus.claims import ClaimLost, ClaimWorker, publish_claims
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.publisher import Publisher, Resender
from glyphoxa_bus.session import InputMessage, SessionContext, serve_session, serve_session_durably
from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA, WORK, ensure_streams, stream_configs
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events.models import Event, NpcMute, SessionStarted, SessionStopped
from glyphoxa_events.subjects import SessionSubjects
from tests.support.service import wait_for

pytestmark = pytest.mark.integration
CAMPAIGN = Campaign(name="test", npcs=[Npc(name="Greta", persona="A blacksmith.")])


async def test_publisher_keeps_order_and_dedupes(nc, tenant):
    subjects = SessionSubjects(tenant, "s1")
    pub = Publisher(nc, max_in_flight=8)
    for i in range(300):
        await pub.publish(subjects.audio_in("alex"), str(i).encode(), msg_id=f"m{i}")
    for i in range(50):  # retried publishes with the same ids are stored once
        await pub.publish(subjects.audio_in("alex"), str(i).encode(), msg_id=f"m{i}")
    await pub.flush()
    sub = await nc.jetstream().subscribe(subjects.audio_in("alex"), ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)
    got = [int((await sub.next_msg(2)).data) for _ in range(300)]
    assert got == list(range(300))
    with pytest.raises(NatsTimeoutError):  # nothing more was stored
        await sub.next_msg(0.3)
    await sub.unsubscribe()


async def test_a_publish_with_a_free_slot_does_not_give_the_loop_up(nc, tenant):
    """nats.py's publish_async waits for its slot with ``wait_for``: on Python 3.11 a task and
    two turns of the loop per publish, in which every other ready task takes a step (in tts:
    other replies' frames, before a reply's first). With a slot free that wait is skipped."""
    subjects = SessionSubjects(tenant, "s1")
    pub = Publisher(nc, max_in_flight=64)
    turns = 0

    def turned() -> None:
        nonlocal turns
        turns += 1

    for i in range(20):
        asyncio.get_running_loop().call_soon(turned)
        before = turns
        await pub.publish(subjects.audio_in("alex"), b"x", msg_id=f"free-{i}")
        assert turns == before, f"publish {i} let the event loop turn"
        await asyncio.sleep(0)
    await pub.flush()
    stored = await nc.jetstream().stream_info(MEDIA, subjects_filter=subjects.audio_in("alex"))
    assert stored.state.messages == 20


async def test_start_up_adds_new_subjects_to_an_existing_stream(nc, tenant):
    """A stream declared by an older release (GLX_EVENTS without usage) is updated in place."""
    js = nc.jetstream()
    config = next(c for c in stream_configs() if c.name == EVENTS)
    config.subjects = [s for s in config.subjects if ".usage." not in s]
    await js.update_stream(config)
    assert "glx.*.*.usage.>" not in (await js.stream_info(EVENTS)).config.subjects
    await ensure_streams(js)
    assert "glx.*.*.usage.>" in (await js.stream_info(EVENTS)).config.subjects
    ack = await js.publish(SessionSubjects(tenant, "s1").usage("stt"), b"{}")
    assert ack.stream == EVENTS


class Recorder:
    """A toy stage: remembers inputs; keeps everything since the first 'open' unacked."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.controls: list[Event] = []
        self.open_from: int | None = None
        self.closed = False

    async def on_control(self, event: Event) -> None:
        self.controls.append(event)

    async def on_message(self, msg: InputMessage) -> None:
        self.seen.append(msg.data)
        if msg.data.startswith(b"open") and self.open_from is None:
            self.open_from = msg.stream_seq
        if msg.data.startswith(b"close"):
            self.open_from = None

    async def on_tick(self) -> None:
        pass

    def tick_after_s(self) -> float | None:
        return None

    def retain_from(self) -> int | None:
        return self.open_from

    async def close(self) -> None:
        self.closed = True


async def _start_session(nc, subjects: SessionSubjects) -> None:
    await nc.jetstream().publish(subjects.ctl("session.started"),
                                 SessionStarted(campaign=CAMPAIGN, started_ns=time.time_ns()).to_bytes())


async def test_takeover_replays_from_ack_floor(nc, tenant):
    subjects = SessionSubjects(tenant, "s2")
    js = nc.jetstream()
    await _start_session(nc, subjects)
    for body in (b"a", b"b", b"open-1", b"x", b"y"):
        await js.publish(subjects.audio_in("alex"), body)

    first = Recorder()
    ctx = SessionContext("vad", subjects, nc, Publisher(nc))
    task = asyncio.create_task(serve_session(ctx, first, MEDIA, [subjects.audio_in("*")]))
    await wait_for(lambda: len(first.seen) == 5, 5)
    await asyncio.sleep(0.2)  # let the ack go out
    task.cancel()  # the replica dies: no close, no further acks
    with pytest.raises(asyncio.CancelledError):
        await task

    second = Recorder()
    ctx2 = SessionContext("vad", subjects, nc, Publisher(nc))
    task2 = asyncio.create_task(serve_session(ctx2, second, MEDIA, [subjects.audio_in("*")]))
    await wait_for(lambda: len(second.seen) == 3, 5)
    assert second.seen == [b"open-1", b"x", b"y"]  # a, b were finished and are not redone
    assert isinstance(second.controls[0], SessionStarted)  # control replayed from the start
    await js.publish(subjects.audio_in("alex"), b"close")
    await js.publish(subjects.ctl("session.stopped"), SessionStopped().to_bytes())
    await asyncio.wait_for(task2, 5)
    assert second.closed and second.seen[-1] == b"close"


async def test_claim_moves_to_another_replica(nc, tenant):
    served: dict[str, list[str]] = {"a": [], "b": []}
    release = asyncio.Event()

    def runner(name):
        async def run(subjects: SessionSubjects) -> None:
            served[name].append(subjects.session)
            await release.wait()
        return run

    a = ClaimWorker(nc, "stt", runner("a"), capacity=4, lease_s=1.0)
    task_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)
    await publish_claims(nc, tenant, "s3", ["stt"])
    await wait_for(lambda: served["a"] == ["s3"], 5)

    b = ClaimWorker(nc, "stt", runner("b"), capacity=4, lease_s=1.0)
    task_b = asyncio.create_task(b.run())
    await asyncio.sleep(0.3)
    assert served["b"] == []  # a still holds the lease
    t0 = time.monotonic()
    await a.shutdown()  # SIGTERM path: nak, so b takes over at once
    task_a.cancel()
    await wait_for(lambda: served["b"] == ["s3"], 3)
    assert time.monotonic() - t0 < 1.0
    release.set()
    await wait_for(lambda: not b.sessions, 5)
    await b.shutdown()
    task_b.cancel()
    await asyncio.gather(task_a, task_b, return_exceptions=True)
    info = await nc.jetstream().stream_info(WORK, subjects_filter=f"glxwork.stt.{tenant}.>")
    assert not (info.state.subjects or {})  # the claim was acked and removed


async def test_claim_of_dead_replica_expires_to_another(nc, tenant):
    served: list[str] = []
    a = ClaimWorker(nc, "tts", lambda s: asyncio.sleep(3600), capacity=4, lease_s=1.0)
    task_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)
    await publish_claims(nc, tenant, "s4", ["tts"])
    await wait_for(lambda: bool(a.sessions), 5)
    # kill -9 equivalent: the replica stops renewing and never naks
    task_a.cancel()
    for held in list(a._held.values()):
        held.task.cancel()

    async def run_b(subjects):
        served.append(subjects.session)

    b = ClaimWorker(nc, "tts", run_b, capacity=4, lease_s=1.0)
    task_b = asyncio.create_task(b.run())
    await wait_for(lambda: served == ["s4"], 4)
    await b.shutdown()
    task_b.cancel()
    await asyncio.gather(task_a, task_b, return_exceptions=True)


class Timer:
    """A toy stage with a timer: a control event starts it, ``on_tick`` sees it run out."""

    def __init__(self) -> None:
        self.ticks = 0
        self.due: float | None = None
        self.fired: float | None = None

    async def on_control(self, event: Event) -> None:
        if isinstance(event, NpcMute):
            self.due = time.monotonic() + 0.1

    async def on_message(self, msg: InputMessage) -> None:
        pass

    async def on_tick(self) -> None:
        self.ticks += 1
        if self.due is not None and time.monotonic() >= self.due:
            self.due, self.fired = None, time.monotonic()

    def tick_after_s(self) -> float | None:
        return 0.02 if self.due is not None else None

    def retain_from(self) -> int | None:
        return None

    async def close(self) -> None:
        pass


async def test_an_idle_session_sleeps_until_a_control_event_starts_a_timer(nc, tenant):
    """Without input or a running timer the loop wakes only every ``idle_tick_s`` (not every
    50 ms: idle sessions cost a stage CPU); a control event wakes it at once, and the timer
    it started is then looked at every ``tick_after_s``."""
    subjects = SessionSubjects(tenant, "s-idle")
    js = nc.jetstream()
    await _start_session(nc, subjects)
    timer = Timer()
    ctx = SessionContext("npc-brain", subjects, nc, Publisher(nc))
    task = asyncio.create_task(serve_session(ctx, timer, MEDIA, [subjects.audio_in("*")],
                                             idle_tick_s=5.0))
    await asyncio.sleep(1.0)
    assert timer.ticks <= 2  # the first look, perhaps one more; 20 at a 50 ms tick
    sent = time.monotonic()
    await js.publish(subjects.ctl("npc.mute"), NpcMute(npc="greta", muted=True).to_bytes())
    await wait_for(lambda: timer.fired is not None, 3)
    assert timer.fired is not None and timer.fired - sent < 2.0  # not the 5 s idle sleep
    await js.publish(subjects.ctl("session.stopped"), SessionStopped().to_bytes())
    await asyncio.wait_for(task, 10)


class Echo:
    """A toy stage: publishes each input to ``out(data)`` and needs nothing afterwards."""

    def __init__(self, ctx: SessionContext, out) -> None:  # type: ignore[no-untyped-def]
        self._ctx, self._out = ctx, out
        self.seen: list[bytes] = []

    async def on_control(self, event: Event) -> None:
        pass

    async def on_message(self, msg: InputMessage) -> None:
        self.seen.append(msg.data)
        await self._ctx.publisher.publish(self._out(msg.data), msg.data,
                                          msg_id=f"echo:{self._ctx.session}:{msg.stream_seq}")

    async def on_tick(self) -> None:
        pass

    def tick_after_s(self) -> float | None:
        return None

    def retain_from(self) -> int | None:
        return None

    async def close(self) -> None:
        pass


async def _acked_through(js, stage: str, subjects: SessionSubjects) -> int:  # type: ignore[no-untyped-def]
    """The consumer's ack floor. Serving a session again deletes and re-adds its consumer
    (at the same floor), so a look that falls in between asks again."""
    for _ in range(50):
        try:
            info = await js.consumer_info(MEDIA, f"{stage}-{subjects.tenant}-{subjects.session}")
            return info.ack_floor.stream_seq
        except NotFoundError:
            await asyncio.sleep(0.02)
    raise AssertionError("the session's input consumer stayed away for 1 s")


async def _acked_at_least(js, stage: str, subjects: SessionSubjects, seq: int) -> bool:  # type: ignore[no-untyped-def]
    return await _acked_through(js, stage, subjects) >= seq


async def _stored(js, subject: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    got = []
    try:
        while True:
            got.append((await sub.next_msg(0.3)).data)
    except NatsTimeoutError:
        pass
    await sub.unsubscribe()
    return got


async def test_input_is_acked_only_once_its_output_is_stored(nc, tenant):
    """The broker takes a publish and never acks it (it died with the message in flight:
    here a plain subscriber, not a stream, takes the subject): the input stays unacked, the
    shared publisher's slot is freed, and once the output can be stored the session is
    served again from its ack floor and the output is stored exactly once."""
    js = nc.jetstream()
    subjects = SessionSubjects(tenant, "lost")
    hole = await nc.subscribe(f"testout.{tenant}.>")  # takes the message, never acks
    publisher = Publisher(nc, ack_timeout_s=0.5)
    handlers: list[Echo] = []

    def new_handler(ctx: SessionContext) -> Echo:
        handlers.append(Echo(ctx, lambda data: f"testout.{tenant}.{data.decode()}"))
        return handlers[-1]

    await _start_session(nc, subjects)
    task = asyncio.create_task(serve_session_durably(
        lambda: SessionContext("vad", subjects, nc, publisher), new_handler,
        MEDIA, [subjects.audio_in("*")]))
    try:
        ack = await js.publish(subjects.audio_in("alex"), b"a")
        await wait_for(lambda: len(handlers) >= 2, 10)  # lost, so served again
        assert await _acked_through(js, "vad", subjects) < ack.seq
        assert publisher.in_flight <= 1  # the unacknowledged publishes were given up

        await hole.unsubscribe()
        await js.add_stream(name=f"TESTOUT_{tenant}", subjects=[f"testout.{tenant}.>"])
        await wait_for(lambda: _acked_at_least(js, "vad", subjects, ack.seq), 10)
        assert await _stored(js, f"testout.{tenant}.a") == [b"a"]
        served = len(handlers)
        await js.publish(subjects.audio_in("alex"), b"b")
        await js.publish(subjects.ctl("session.stopped"), SessionStopped().to_bytes())
        await asyncio.wait_for(task, 10)
        assert len(handlers) == served  # no loss after the stream came
        assert await _stored(js, f"testout.{tenant}.b") == [b"b"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lost_publish_of_one_session_costs_another_session_nothing(nc, tenant):
    """Two sessions share the process's publisher; one's outputs cannot be stored (no
    stream takes them). The other's publishes neither fail nor are served again."""
    js = nc.jetstream()
    sick, well = SessionSubjects(tenant, "sick"), SessionSubjects(tenant, "well")
    publisher = Publisher(nc, ack_timeout_s=1.0)
    served: dict[str, list[Echo]] = {"sick": [], "well": []}

    def new_handler(ctx: SessionContext) -> Echo:
        out = ((lambda d: f"nostream.{tenant}.{d.decode()}") if ctx.session == "sick"
               else (lambda d: well.stt(d.decode())))
        served[ctx.session].append(Echo(ctx, out))
        return served[ctx.session][-1]

    tasks = []
    for subjects in (sick, well):
        await _start_session(nc, subjects)
        tasks.append(asyncio.create_task(serve_session_durably(
            lambda s=subjects: SessionContext("vad", s, nc, publisher), new_handler,
            MEDIA, [subjects.audio_in("*")])))
    await js.publish(sick.audio_in("alex"), b"x")
    await wait_for(lambda: len(served["sick"]) >= 2, 10)
    last = None
    for i in range(20):
        last = await js.publish(well.audio_in("alex"), f"w{i}".encode())
        await asyncio.sleep(0.02)
    await wait_for(lambda: _acked_at_least(js, "vad", well, last.seq), 10)
    assert len(served["well"]) == 1  # never served again
    assert served["well"][0].seen == [f"w{i}".encode() for i in range(20)]
    stored = await _stored(js, well.stt("*"))
    assert sorted(stored) == sorted(f"w{i}".encode() for i in range(20))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _frames_through_an_outage(broker, publish, outage_s: float) -> None:  # type: ignore[no-untyped-def]
    """Frames at 20 ms pace; the broker paused (messages pile up unread in its socket), then
    killed with them, and started again ``outage_s`` later on the same store."""
    t0 = time.monotonic()
    for i in range(100 + int(outage_s / 0.02) + 50):
        await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))
        if i == 60:
            broker.pause()
        if i == 80:
            broker.kill9()
        if i == 80 + int(outage_s / 0.02):
            await asyncio.to_thread(broker.restart)
        await publish(i)


async def test_an_edge_loses_no_frame_when_the_broker_dies_with_frames_in_flight(broker, tenant):
    """What the broker had taken but not stored when it died is published again, in order,
    with the same ids and headers, once it is back: every frame stored once, in order."""
    nc = await connect(BusSettings(url=broker.url), name="edge")
    try:
        await ensure_streams(nc.jetstream())
        subject = SessionSubjects(tenant, "s1").audio_in("alex")
        edge = Resender(Publisher(nc, ack_timeout_s=1.0), nc)

        async def publish(i: int) -> None:
            await edge.publish(subject, str(i).encode(), msg_id=f"ain:{i}",
                               headers={"Glx-Seq": str(i)})

        await _frames_through_an_outage(broker, publish, outage_s=2.0)
        await edge.flush()
        stored = await _stored(nc.jetstream(), subject)
        assert [int(x) for x in stored] == list(range(250))  # a plain Publisher: 21 lost
        assert edge.dropped == 0
    finally:
        await nc.close()


async def test_an_edge_keeps_a_bounded_number_of_frames_and_counts_the_rest(broker, tenant):
    nc = await connect(BusSettings(url=broker.url), name="edge")
    try:
        await ensure_streams(nc.jetstream())
        subject = SessionSubjects(tenant, "s1").audio_in("alex")
        edge = Resender(Publisher(nc, ack_timeout_s=1.0), nc, limit=50)

        async def publish(i: int) -> None:
            await edge.publish(subject, str(i).encode(), msg_id=f"ain:{i}")

        await _frames_through_an_outage(broker, publish, outage_s=2.0)  # 100+ frames held
        await edge.flush()
        stored = [int(x) for x in await _stored(nc.jetstream(), subject)]
        assert stored == sorted(stored) and stored[-1] == 249
        # (a frame given up may have been stored all the same, before the broker died)
        assert edge.dropped > 0 and 250 - edge.dropped <= len(stored) < 250
    finally:
        await nc.close()


async def test_a_replica_stalled_past_its_lease_gives_its_sessions_up(nc, tenant, caplog):
    """SIGSTOP (here: the event loop blocked) for longer than the lease: the claim may have
    gone to another replica meanwhile, so the replica stops serving without acking; the
    nak hands it on, here back to the only replica, which serves it afresh."""
    started: list[float] = []

    async def run(subjects: SessionSubjects) -> None:
        started.append(time.monotonic())
        await asyncio.sleep(3600)

    worker = ClaimWorker(nc, "tts", run, capacity=4, lease_s=1.0)
    task = asyncio.create_task(worker.run())
    await publish_claims(nc, tenant, "stalled", ["tts"])
    await wait_for(lambda: len(started) == 1, 5)
    time.sleep(1.6)  # noqa: ASYNC251 - the whole process frozen, as by SIGSTOP
    await wait_for(lambda: len(started) == 2, 5)
    assert "stalled for" in caplog.text and "giving up its 1 sessions" in caplog.text
    await worker.shutdown()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class SaysAtClose(Echo):
    """A toy stage whose close publishes what it would tell the others of its session
    (vad: an utterance cut short; tts: a turn's audio cancelled because the session ended)."""

    async def close(self) -> None:
        await self._ctx.publisher.publish(self._ctx.subjects.stt("closing"), b"session ended",
                                          msg_id=f"closing:{self._ctx.session}")


async def test_a_serving_given_up_says_nothing_as_it_closes(nc, tenant):
    """The loop stalled past the lease (another replica may be serving the session by now):
    the handler is closed to stop its work, but nothing it says then is stored; the message
    would take the id of what the serving that goes on says when the session really ends."""
    js = nc.jetstream()
    subjects = SessionSubjects(tenant, "given-up")
    await _start_session(nc, subjects)
    ctx = SessionContext("vad", subjects, nc, Publisher(nc), stall_limit_s=0.3)
    handler = SaysAtClose(ctx, lambda data: subjects.stt(data.decode()))
    task = asyncio.create_task(serve_session(ctx, handler, MEDIA, [subjects.audio_in("*")]))
    await js.publish(subjects.audio_in("alex"), b"a")
    await wait_for(lambda: handler.seen == [b"a"], 5)
    time.sleep(1.0)  # noqa: ASYNC251 - the whole process frozen, as by SIGSTOP
    with pytest.raises(ClaimLost):
        await asyncio.wait_for(task, 5)
    assert await _stored(js, subjects.stt("a")) == [b"a"]
    assert await _stored(js, subjects.stt("closing")) == []  # stored before this fix

    again = SessionContext("vad", subjects, nc, Publisher(nc))
    task = asyncio.create_task(serve_session(again, SaysAtClose(again, lambda d: subjects.stt(
        d.decode())), MEDIA, [subjects.audio_in("*")]))
    await js.publish(subjects.ctl("session.stopped"), SessionStopped().to_bytes())
    await asyncio.wait_for(task, 10)
    assert await _stored(js, subjects.stt("closing")) == [b"session ended"]


async def test_a_follower_restarted_under_a_new_name_reads_on(nc, tenant):
    """A follower's consumer is named (its create names the filter, docs/adr/0006); when
    nats.py restarts it (here: the server lost it), the new one has a name of its own and
    delivery goes on in order from where it was."""
    from glyphoxa_bus.follow import follow

    js = nc.jetstream()
    subjects = SessionSubjects(tenant, "followed")
    got: asyncio.Queue = asyncio.Queue()

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        await got.put(msg.data)

    sub = await follow(js, subjects.ctl(">"), CONTROL, on_msg)
    try:
        first = sub._consumer  # noqa: SLF001
        assert first.startswith("follow-")
        await js.publish(subjects.ctl("x"), b"1")
        assert await asyncio.wait_for(got.get(), 5) == b"1"
        await js.delete_consumer(CONTROL, first)
        await js.publish(subjects.ctl("x"), b"2")
        assert await asyncio.wait_for(got.get(), 10) == b"2"
        await wait_for(lambda: sub._consumer != first, 5)  # noqa: SLF001
        assert sub._consumer.startswith("follow-")  # noqa: SLF001
    finally:
        await sub.unsubscribe()
