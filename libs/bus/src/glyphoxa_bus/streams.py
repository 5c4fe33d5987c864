"""The one place where streams and consumers are declared.

`k8s/` and the KEDA ScaledObjects refer to these names; change them here only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from glyphoxa_events.subjects import CLAIM_ROOT, ROOT

log = logging.getLogger(__name__)

MEDIA = "GLX_MEDIA"
EVENTS = "GLX_EVENTS"
CONTROL = "GLX_CTL"
WORK = "GLX_WORK"
HEARTBEAT_BUCKET = "glx_heartbeats"
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 6.0

# each replayable stream's cap (NATS_STREAM_MAX_BYTES): 2 GiB x 3 fits beside a GM's other
# files; a machine with less than ~8 GB free refuses to declare them (JetStream reserves
# max_bytes against 75% of the free disk), and 3 x 8 GiB needed ~32 GB free
DEFAULT_MAX_BYTES = 2 * 1024**3
DUPLICATE_WINDOW_S = 120.0
MAX_MSG_BYTES = 256 * 1024


@dataclass(frozen=True)
class StreamSettings:
    """Retention of the replayable streams (a session can be replayed while it is kept)."""

    max_age_s: float = 24 * 3600
    max_bytes: int = DEFAULT_MAX_BYTES
    replicas: int = 1


def stream_configs(settings: StreamSettings = StreamSettings()) -> list[StreamConfig]:
    def limits(name: str, subjects: list[str], description: str) -> StreamConfig:
        return StreamConfig(
            name=name,
            description=description,
            subjects=subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.max_age_s,
            max_bytes=settings.max_bytes,
            max_msg_size=MAX_MSG_BYTES,
            discard=DiscardPolicy.OLD,
            # JetStream refuses a duplicate window longer than the stream keeps messages
            duplicate_window=min(DUPLICATE_WINDOW_S, settings.max_age_s),
            num_replicas=settings.replicas,
        )

    return [
        limits(MEDIA, [f"{ROOT}.*.*.audio.>"], "opus audio in (per speaker) and out (per NPC)"),
        limits(
            EVENTS,
            [f"{ROOT}.*.*.vad.>", f"{ROOT}.*.*.stt.>", f"{ROOT}.*.*.reply.>",
             f"{ROOT}.*.*.usage.>"],
            "utterances, transcripts, reply sentences and usage",
        ),
        limits(CONTROL, [f"{ROOT}.*.*.ctl.>"], "per-session control events"),
        StreamConfig(
            name=WORK,
            description="session claims, one per stage and session",
            subjects=[f"{CLAIM_ROOT}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=settings.replicas,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: StreamSettings = StreamSettings(),
                         update: bool = True) -> None:
    """Create every stream that is missing, and with ``update`` set existing ones to
    ``settings`` (their retention: NATS_STREAM_MAX_AGE_S, NATS_STREAM_MAX_BYTES). Only the
    deployment's own services update; the operator's tools (scene player, benchmarks) create
    what is missing and leave the retention the deployment chose."""
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream created", extra={"stream": config.name})
            continue
        if update:
            await js.update_stream(config)


async def await_streams(js: JetStreamContext, settings: StreamSettings = StreamSettings(),
                        poll_s: float = 1.0, say_every_s: float = 10.0) -> None:
    """Wait until every stream and the heartbeat bucket exist, declared by a process that
    may (session-control, ADR 0006); says what it waits for every ``say_every_s``."""
    names = [c.name for c in stream_configs(settings)] + [f"KV_{HEARTBEAT_BUCKET}"]
    waited, said = 0.0, 0.0
    while True:
        missing = []
        for name in names:
            try:
                await js.stream_info(name)
            except NotFoundError:
                missing.append(name)
        if not missing:
            return
        if waited >= said:
            log.warning("waiting for session-control to declare %s", ", ".join(missing),
                        extra={"waited_s": round(waited)})
            said += say_every_s
        await asyncio.sleep(poll_s)
        waited += poll_s


def claims_consumer_name(stage: str) -> str:
    return f"claims-{stage}"


def claims_consumer_config(stage: str, lease_s: float) -> ConsumerConfig:
    """The shared durable consumer a stage's replicas fetch claims from.

    Its ack wait is the claim lease: a replica keeps a claim with in-progress acks, and a
    claim whose holder died is redelivered to another replica once the lease runs out.
    KEDA scales the stage on this consumer's pending + ack-pending count.
    """
    return ConsumerConfig(
        durable_name=claims_consumer_name(stage),
        filter_subject=f"{CLAIM_ROOT}.{stage}.>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=lease_s,
        max_deliver=-1,
        max_ack_pending=-1,
    )


async def ensure_claims_consumer(js: JetStreamContext, stage: str, lease_s: float) -> None:
    config = claims_consumer_config(stage, lease_s)
    try:
        info = await js.consumer_info(WORK, config.durable_name)
    except NotFoundError:
        await js.add_consumer(WORK, config)
        return
    if info.config.ack_wait != lease_s:
        await js.add_consumer(WORK, config)  # add with the same name updates the config


def heartbeat_bucket_config(ttl_s: float, replicas: int = 1) -> KeyValueConfig:
    """Liveness of stage replicas and edges: a key lives ``ttl_s`` after its last put."""
    return KeyValueConfig(
        bucket=HEARTBEAT_BUCKET,
        description="heartbeats of stage replicas and edges (<role>.<replica> -> Heartbeat)",
        ttl=ttl_s,
        history=1,
        storage=StorageType.FILE,
        replicas=replicas,
    )


async def ensure_heartbeat_bucket(js: JetStreamContext, ttl_s: float,
                                  replicas: int = 1) -> KeyValue:
    """Open the heartbeat bucket, creating it if it does not exist yet.

    The first process to create it sets its TTL (and its copies in a cluster); a process
    configured with another TTL logs a warning and keeps the bucket as it is (replicas must
    agree on one TTL: delete the bucket to change it).
    """
    try:
        kv = await js.key_value(HEARTBEAT_BUCKET)
    except BucketNotFoundError:
        try:
            kv = await js.create_key_value(heartbeat_bucket_config(ttl_s, replicas))
            log.info("kv bucket created", extra={"bucket": HEARTBEAT_BUCKET, "ttl_s": ttl_s})
            return kv
        except APIError as exc:  # another process created it meanwhile, with another TTL?
            try:
                kv = await js.key_value(HEARTBEAT_BUCKET)
            except BucketNotFoundError:
                raise exc from None
    status = await kv.status()
    if status.ttl is not None and abs(status.ttl - ttl_s) > 1e-3:
        log.warning("heartbeat bucket has ttl %.1f s, not the configured %.1f s; keeping it",
                    status.ttl, ttl_s, extra={"bucket": HEARTBEAT_BUCKET})
    return kv
