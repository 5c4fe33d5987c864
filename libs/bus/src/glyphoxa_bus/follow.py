"""Following a session's subjects with an ordered consumer that recovers from a broker restart.

nats.py notices a dead ordered consumer (the server restarted and lost it, or stopped
delivering) only by missed idle heartbeats, and starts it afresh after two: with its
default of 5 s a follower sat deaf for 10-20 s after nats-server came back (seen in the
chaos tests: no transcript, control event or NPC audio reached the edge meanwhile). With
a 1 s heartbeat it reads again within about 2-3 s, at the cost of one small message a
second per quiet follower.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

HEARTBEAT_S = 1.0


async def follow(js: JetStreamContext, subject: str, stream: str,
                 cb: Callable[[Msg], Awaitable[None]],
                 deliver_policy: DeliverPolicy = DeliverPolicy.ALL):  # type: ignore[no-untyped-def]
    """An ordered push consumer on ``subject`` calling ``cb`` for each message in order."""
    return await js.subscribe(subject, stream=stream, ordered_consumer=True,
                              deliver_policy=deliver_policy, idle_heartbeat=HEARTBEAT_S, cb=cb)
