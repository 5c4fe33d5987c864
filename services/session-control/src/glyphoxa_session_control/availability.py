"""Whether session-control's two dependencies answer now: PostgreSQL (the system of record)
and NATS (where stops, mutes and claims go).

While one is away the APIs refuse what needs it at once with 503 and the reason, instead of
waiting for the pool or a publish's ack and answering 500; the clients reconnect by
themselves. Liveness asks which NATS connection is up to know which heartbeats it could
not have received (:mod:`glyphoxa_session_control.liveness`).
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import Error as NatsError

from glyphoxa_bus.publisher import PublishError
from glyphoxa_pg.pool import PgHealth, unreachable
from glyphoxa_session_control.errors import Unavailable

BUS_AWAY = ("the message bus (NATS) is unreachable and session-control is reconnecting: "
            "nothing was changed; try again in a moment")


class Availability:
    def __init__(self, pg: PgHealth, nc: Client):
        self.pg, self._nc = pg, nc

    @property
    def bus_connection(self) -> int | None:
        """Which connection to NATS is up (its count of reconnects), None while there is none."""
        return self._nc.stats["reconnects"] if self._nc.is_connected else None

    def require_database(self) -> None:
        if not self.pg.ok:
            raise Unavailable(_database_away(self.pg.problem))

    def require_bus(self) -> None:
        if not self._nc.is_connected:
            raise Unavailable(BUS_AWAY)

    def unavailable(self, exc: BaseException) -> Unavailable | None:
        """The 503 for an outage met in the middle of a request (and PostgreSQL is marked
        away for the requests after it), or None for any other failure."""
        if unreachable(exc):
            self.pg.failed(exc)
            return Unavailable(_database_away(self.pg.problem))
        if isinstance(exc, (PublishError, NatsError)):
            return Unavailable(f"the message bus (NATS) did not take it ({type(exc).__name__}); "
                               "try again in a moment")
        return None


def _database_away(problem: str) -> str:
    return (f"{problem}: session-control can neither read nor store anything now; try again "
            "in a moment")
