"""The fuzz test's hostile publisher, a process of its own as an attacker's would be (in the
scene player's process its work stalled the player's frames):

    python -m tests.support.flood URL TENANT SESSION --speakers a,b --npcs x,y --total N --seconds S

publishes ``tests.support.hostile`` messages at the live session in batches over about
``--seconds`` and prints a ``Tally`` (JSON) of where each went by its JetStream ack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import nats
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js.api import DeliverPolicy, PubAck
from nats.js.errors import APIError

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.streams import EVENTS, MAX_MSG_BYTES
from glyphoxa_events import headers as H
from glyphoxa_events.models import Transcript, UtteranceEnded, UtteranceStarted
from glyphoxa_events.subjects import SessionSubjects
from tests.support.hostile import (
    CONTROL,
    RECORDER,
    Hostile,
    HostileMessages,
    RealEvents,
    claim_reader,
)
from tests.support.rawnats import RawPublisher

BATCH = 500
INPUT_OF = {"vad": "vad", "stt": "stt", "npc-brain": "npc-brain", "tts": "tts"}


@dataclass
class Tally:
    sent: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    """Stored by JetStream, by the reader that must reject it (``tests.support.hostile``)."""
    recorded_control: int = 0
    """Stored control events on ``ctl.turn``/``ctl.played``: the recorder parks them too."""
    duplicates: int = 0
    """Dropped by JetStream: a ``Nats-Msg-Id`` it stored within its duplicate window."""
    refused: Counter[str] = field(default_factory=Counter)
    """Refused at publish time (larger than the stream's or the server's largest message)."""
    categories: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def count(self, msg: Hostile, ack: object) -> None:
        """Where one message went, by its JetStream ack (a PubAck, an ack body, an error)."""
        if isinstance(ack, bytes):  # the ack of a bare publish
            body = json.loads(ack)
            ack = APIError(description=str(body["error"])) if "error" in body else PubAck.from_response(body)
        if isinstance(ack, BaseException):
            self.refused[type(ack).__name__] += 1
        elif ack.duplicate:  # type: ignore[attr-defined]
            self.duplicates += 1
        else:
            self.stored[msg.reader] += 1
            if msg.reader == CONTROL and msg.subject.endswith((".ctl.turn", ".ctl.played")):
                self.recorded_control += 1

    def stage_rejects(self, stage: str) -> dict[str, int]:
        """What ``stage`` must count: its own input, every control event, its claims."""
        own = sum(n for reader, n in self.stored.items() if INPUT_OF.get(reader) == stage)
        return {"input": own, "control": self.stored[CONTROL],
                "claims": self.stored[claim_reader(stage)]}

    def parked(self) -> int:
        """What the recorder must park (as malformed, of an unknown session, or refused)."""
        return self.stored[RECORDER] + self.recorded_control

    def to_json(self) -> str:
        return json.dumps({name: dict(value) if isinstance(value, Counter) else value
                           for name, value in vars(self).items()})

    @classmethod
    def from_json(cls, text: str) -> Tally:
        d = json.loads(text)
        return cls(d["sent"], Counter(d["stored"]), d["recorded_control"], d["duplicates"],
                   Counter(d["refused"]), Counter(d["categories"]), d["seconds"])


class RealFollower:
    """What the session really published so far (messages with the stages' own ids), for the
    generator's copies of real events."""

    def __init__(self) -> None:
        self.utterances: dict[str, UtteranceStarted] = {}
        self.ended: dict[str, UtteranceEnded] = {}
        self.finals: dict[str, Transcript] = {}

    async def follow(self, nc: nats.NATS, subjects: SessionSubjects) -> None:
        js = nc.jetstream()
        for subject in (subjects.vad("*"), subjects.stt("*")):
            await js.subscribe(subject, stream=EVENTS, ordered_consumer=True,
                               deliver_policy=DeliverPolicy.ALL, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        msg_id, kind = headers.get(H.MSG_ID, ""), headers.get(H.KIND)
        if msg_id.startswith("vad:") and kind == "start":
            started = UtteranceStarted.model_validate_json(msg.data)
            self.utterances[started.utterance_id] = started
        elif msg_id.startswith("vad:") and kind == "end":
            ended = UtteranceEnded.model_validate_json(msg.data)
            self.ended[ended.utterance_id] = ended
        elif msg_id.startswith("stt:") and msg_id.endswith(":final"):
            final = Transcript.model_validate_json(msg.data)
            self.finals[final.utterance_id] = final

    def now(self) -> RealEvents:
        return RealEvents(dict(self.utterances), dict(self.ended), dict(self.finals))


async def flood(url: str, gen: HostileMessages, total: int, seconds: float) -> Tally:
    """Publish ``total`` hostile messages in batches over about ``seconds``. A subject that is
    not UTF-8 goes through a bare protocol connection (nats.py cannot send one); the client
    that reads the acks is ours (``glyphoxa_bus.connect``), which reads any subject."""
    nc = await connect(BusSettings(url=url), name="fuzz-flood", declare=False)
    js = nc.jetstream(publish_async_max_pending=4 * BATCH)
    real = RealFollower()
    await real.follow(nc, gen.subjects)
    raw_acks: dict[str, asyncio.Future[bytes]] = {}

    async def on_raw_ack(msg: Msg) -> None:
        raw_acks[msg.subject].set_result(msg.data)

    await nc.subscribe("_INBOX.fuzz-raw.*", cb=on_raw_ack)
    tally = Tally()
    started = time.monotonic()
    try:
        async with RawPublisher(url) as raw:
            while tally.sent < total:
                batch = gen.batch(min(BATCH, total - tally.sent), real.now())
                acks = [await _publish(js, raw, raw_acks, msg, tally) for msg in batch]
                await raw.flush()
                sent = [(m, a) for m, a in zip(batch, acks, strict=True) if a is not None]
                done = await asyncio.wait_for(asyncio.gather(*(a for _, a in sent),
                                                             return_exceptions=True), timeout=60)
                for (msg, _), ack in zip(sent, done, strict=True):
                    tally.count(msg, ack)
                tally.sent += len(batch)
                ahead_s = tally.sent / total * seconds - (time.monotonic() - started)
                if ahead_s > 0:
                    await asyncio.sleep(ahead_s)
    finally:
        tally.seconds = time.monotonic() - started
        await nc.close()
    return tally


async def _publish(js, raw: RawPublisher, raw_acks: dict[str, asyncio.Future[bytes]],  # type: ignore[no-untyped-def]
                   msg: Hostile, tally: Tally) -> asyncio.Future | None:
    """Send one message; the future of its JetStream ack (None: refused outright)."""
    tally.categories[msg.category] += 1
    if not _utf8(msg.subject):  # only a bare connection sends it
        reply = f"_INBOX.fuzz-raw.{len(raw_acks)}"
        raw_acks[reply] = asyncio.get_running_loop().create_future()
        raw.publish(msg.subject.encode("utf-8", "surrogateescape"), msg.data, msg.headers, reply)
        return raw_acks[reply]
    if len(msg.data) <= MAX_MSG_BYTES:
        return await js.publish_async(msg.subject, msg.data, headers=msg.headers)
    # refused by the stream: nats.py's publish_async never resolves an ack that is an error
    # (its from_error raises), so this one is published and waited for
    try:
        ack = await js.publish(msg.subject, msg.data, headers=msg.headers)
    except (APIError, MaxPayloadError) as exc:
        tally.refused[type(exc).__name__] += 1
        return None
    done = asyncio.get_running_loop().create_future()
    done.set_result(ack)
    return done


def _utf8(subject: str) -> bool:
    try:
        subject.encode()
    except UnicodeEncodeError:
        return False
    return True


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("url")
    args.add_argument("tenant")
    args.add_argument("session")
    args.add_argument("--speakers", required=True, help="the players, comma separated")
    args.add_argument("--npcs", required=True, help="the campaign's NPC tokens, comma separated")
    args.add_argument("--total", type=int, default=100_000)
    args.add_argument("--seconds", type=float, default=15.0)
    args.add_argument("--seed", type=int, default=13)
    a = args.parse_args()
    gen = HostileMessages(a.tenant, a.session, tuple(a.speakers.split(",")),
                          tuple(a.npcs.split(",")), seed=a.seed)
    tally = asyncio.run(flood(a.url, gen, a.total, a.seconds))
    print(tally.to_json())


if __name__ == "__main__":
    main()
