"""Following a session's subjects with an ordered consumer that recovers from a broker restart.

nats.py notices a dead ordered consumer (the server restarted and lost it, or stopped
delivering) only by missed idle heartbeats, and starts it afresh after two: with its
default of 5 s a follower sat deaf for 10-20 s after nats-server came back (seen in the
chaos tests: no transcript, control event or NPC audio reached the edge meanwhile). With
a 1 s heartbeat it reads again within about 2-3 s, at the cost of one small message a
second per quiet follower.

The consumer is named, so nats.py creates it with JetStream's request that names the
filter (``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>``): the only create a tenant's
own edge may send (docs/adr/0006), since the server refuses one whose body's filter differs
from the subject's. Each restart of the ordered consumer takes a new name: the old one may
still exist for a while (a gap in the sequence, not a lost server), and a create under its
name with another start would be refused and leave the follower deaf.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

HEARTBEAT_S = 1.0


def consumer_name() -> str:
    """A fresh ordered consumer's name (one token, unique enough never to meet another)."""
    return f"follow-{secrets.token_hex(8)}"


async def follow(js: JetStreamContext, subject: str, stream: str,
                 cb: Callable[[Msg], Awaitable[None]],
                 deliver_policy: DeliverPolicy = DeliverPolicy.ALL):  # type: ignore[no-untyped-def]
    """An ordered push consumer on ``subject`` calling ``cb`` for each message in order."""
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True,
                             deliver_policy=deliver_policy, idle_heartbeat=HEARTBEAT_S, cb=cb,
                             config=ConsumerConfig(name=consumer_name()))
    _renamed_on_restart(sub)
    return sub


def _renamed_on_restart(sub) -> None:  # type: ignore[no-untyped-def]
    """nats.py restarts an ordered consumer with the request it made first (``_ccreq``,
    pinned nats-py 2.x); give each restart a name of its own."""
    jsi = sub._sub._jsi
    recreate = jsi.recreate_consumer

    async def recreate_renamed() -> None:
        jsi._ccreq.name = consumer_name()
        await recreate()

    jsi.recreate_consumer = recreate_renamed
