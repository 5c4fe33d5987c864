"""Reading a session back from the replayable streams (replay, export, timeline).

The streams keep every message for ``NATS_STREAM_MAX_AGE_S``/``NATS_STREAM_MAX_BYTES``
(``StreamSettings``) and then drop the oldest first, so what is kept of a session is
either all of it, its later part, or nothing: ``kept_since`` says from when a stream
still holds everything.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

MAX_MESSAGES = 2_000_000  # one reading's bound: ~11 speaker-hours of 20 ms frames


class TooMuch(RuntimeError):
    """More messages than one reading may hold."""


@dataclass(frozen=True)
class Recorded:
    """One stored message."""

    subject: str
    data: bytes
    headers: dict[str, str]
    stored_ns: int  # when JetStream stored it (wall clock, unix ns)
    seq: int  # its stream sequence


async def count_kept(js: JetStreamContext, stream: str, subject: str) -> int:
    """How many messages on ``subject`` (wildcards allowed) the stream holds now."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def kept_since(js: JetStreamContext, stream: str) -> int | None:
    """From when (store time, unix ns) the stream still holds everything: 0 when it has
    dropped nothing yet, else its oldest message's store time; None for an empty stream
    that has dropped messages."""
    info = await js.stream_info(stream)
    if info.state.first_seq <= 1:
        return 0
    if not info.state.messages:
        return None
    try:
        first = await js.get_msg(stream, seq=info.state.first_seq, next=True)
    except NotFoundError:  # aged out between the two calls
        return None
    return _ns(first.time)


async def read_kept(js: JetStreamContext, stream: str, subject: str, *, headers_only: bool = False,
                    idle_timeout_s: float = 10.0, limit: int = MAX_MESSAGES) -> list[Recorded]:
    """Every message on ``subject`` the stream holds, oldest first (an ordered consumer that
    stops once the server says nothing is pending)."""
    expected = await count_kept(js, stream, subject)
    if expected == 0:
        return []
    if expected > limit:
        raise TooMuch(f"{expected} messages on {subject} (at most {limit} in one reading)")
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL, headers_only=headers_only or None,
                             pending_msgs_limit=-1, pending_bytes_limit=-1)
    out: list[Recorded] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout_s)
            except (TimeoutError, NatsTimeout):
                if await count_kept(js, stream, subject) < expected:
                    return out  # the rest aged out while we read
                raise TimeoutError(f"reading {subject} from {stream}: nothing for {idle_timeout_s:g} s "
                                   f"after {len(out)} of {expected} messages") from None
            meta = msg.metadata
            out.append(Recorded(msg.subject, msg.data, dict(msg.headers or {}),
                                _ns(meta.timestamp), meta.sequence.stream))
            if meta.num_pending == 0 or len(out) >= limit:
                return out
    finally:
        await sub.unsubscribe()


def _ns(value: datetime | str | int | float | None) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)):
        return int(value)
    text = value.rstrip("Z")  # RFC 3339 with nanoseconds, which datetime cannot parse
    whole, _, frac = text.partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return int(seconds) * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))


class CaptureClock:
    """When a capture time was published, for a session whose capture clock ran ahead of
    the wall clock: the scene player at ``--speed X`` captures X times faster than real
    time (an edge's capture times are wall-clock times, give or take transit). Built from
    the session's stored ``audio.in`` frames: (``Glx-Capture-Ns``, store time) pairs."""

    AHEAD = 0.9  # wall time per capture time below this: the capture clock runs ahead

    def __init__(self, pairs: list[tuple[int, int]]):
        self._by_capture = sorted(pairs)
        self._by_wall = sorted((w, c) for c, w in pairs)
        (c0, w0), (c1, w1) = self._by_capture[0], self._by_capture[-1]
        self._pace = (w1 - w0) / (c1 - c0)  # wall time per capture time

    @classmethod
    def of(cls, pairs: list[tuple[int, int]]) -> CaptureClock | None:
        """The clock, or None when capture and wall time went at the same pace."""
        if len(pairs) < 2:
            return None
        (c0, w0), (c1, w1) = min(pairs), max(pairs)
        if c1 <= c0 or (w1 - w0) / (c1 - c0) >= cls.AHEAD:
            return None
        return cls(pairs)

    def wall_of(self, capture_ns: int) -> int:
        return _interp(self._by_capture, capture_ns, self._pace) if capture_ns else 0

    def capture_of(self, wall_ns: int) -> int:
        return _interp(self._by_wall, wall_ns, 1 / self._pace) if wall_ns else 0


def _interp(points: list[tuple[int, int]], x: int, slope: float) -> int:
    """y at x between the two nearest points; past either end, at the clock's pace."""
    if x <= points[0][0]:
        return int(points[0][1] + (x - points[0][0]) * slope)
    if x >= points[-1][0]:
        return int(points[-1][1] + (x - points[-1][0]) * slope)
    i = bisect.bisect_left(points, (x, -(2**63)))  # points[i - 1][0] < x <= points[i][0]
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return int(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
