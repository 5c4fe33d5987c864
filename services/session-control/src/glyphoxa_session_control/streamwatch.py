"""The JetStream numbers an operator watches, read every few seconds for ``/metrics``.

- Each stage's claims consumer ``claims-<stage>`` on ``GLX_WORK``: ``num_pending`` (sessions
  waiting for a replica with room) and ``num_ack_pending`` (sessions a replica holds). Their
  sum is the lag KEDA's nats-jetstream scaler scales the stage on (k8s/base/scaling.yaml);
  before any replica of a stage made its consumer, the stage's claims in the stream count
  as pending.
- Each replayable stream's bytes, its ``max_bytes`` and ``max_age``, and the age of its
  oldest message: how far back a session can still be replayed or exported.

session-control reads them because it always runs and may read any stream (ADR 0006); a
stage with no replica at all still shows its waiting claims here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA, WORK, claims_consumer_name
from glyphoxa_events.subjects import CLAIM_ROOT, STAGES
from glyphoxa_session_control.metrics import (
    CLAIMS_HELD,
    CLAIMS_PENDING,
    STREAM_BYTES,
    STREAM_LIMIT_BYTES,
    STREAM_MAX_AGE,
    STREAM_OLDEST_AGE,
)

log = logging.getLogger("glyphoxa.session_control.streamwatch")

REPLAYABLE = (MEDIA, EVENTS, CONTROL)
INTERVAL_S = 5.0


class StreamWatch:
    def __init__(self, nc: Client, interval_s: float = INTERVAL_S):
        self._nc, self._js, self._interval = nc, nc.jetstream(), interval_s
        self._failing = False

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
                if self._failing:
                    log.info("JetStream numbers read again")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS away: the next round tries again
                if not self._failing:
                    log.warning("cannot read JetStream's numbers for /metrics: %s", exc)
                self._failing = True
            await asyncio.sleep(self._interval)

    async def poll(self) -> None:
        for stage in STAGES:
            pending, held = await self._claims(stage)
            CLAIMS_PENDING.labels(stage=stage).set(pending)
            CLAIMS_HELD.labels(stage=stage).set(held)
        for stream in REPLAYABLE:
            info = await self._stream_info(stream)
            state, config = info["state"], info["config"]
            STREAM_BYTES.labels(stream=stream).set(state.get("bytes", 0))
            STREAM_LIMIT_BYTES.labels(stream=stream).set(max(config.get("max_bytes", -1), 0))
            STREAM_MAX_AGE.labels(stream=stream).set(config.get("max_age", 0) / 1e9)
            STREAM_OLDEST_AGE.labels(stream=stream).set(oldest_age_s(state, time.time()))

    async def _claims(self, stage: str) -> tuple[int, int]:
        try:
            info = await self._js.consumer_info(WORK, claims_consumer_name(stage), timeout=2)
            return info.num_pending or 0, info.num_ack_pending or 0
        except NotFoundError:  # no replica of the stage has started yet
            waiting = await self._js.stream_info(WORK, subjects_filter=f"{CLAIM_ROOT}.{stage}.>")
            return sum((waiting.state.subjects or {}).values()), 0

    async def _stream_info(self, stream: str) -> dict:  # type: ignore[type-arg]
        """The server's own answer: nats.py's StreamState leaves out ``first_ts``."""
        reply = await self._nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2)
        info = json.loads(reply.data)
        if "error" in info:
            raise RuntimeError(f"stream {stream}: {info['error'].get('description', info['error'])}")
        return info


def oldest_age_s(state: dict, now_s: float) -> float:  # type: ignore[type-arg]
    """Seconds since the stream's oldest message was stored (0 for an empty stream)."""
    first = state.get("first_ts", "")
    if not state.get("messages") or not first or first.startswith("0001-"):
        return 0.0
    # RFC 3339 with nanoseconds: Python takes at most microseconds
    head, _, frac = first.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")
    return max(0.0, now_s - stamp.timestamp())
