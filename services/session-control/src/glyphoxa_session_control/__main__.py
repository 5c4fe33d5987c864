"""session-control: serves ``glxapi.session.{start,stop,get}`` and publishes stage claims."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsConfigDict

from glyphoxa_bus.publisher import Publisher
from glyphoxa_events.api import ApiReply, GetSession, StartSession, StopSession
from glyphoxa_events.models import MAX_EVENT_BYTES
from glyphoxa_events.subjects import api_subject
from glyphoxa_runtime.service import run_service
from glyphoxa_runtime.settings import ServiceSettings
from glyphoxa_session_control.core import SessionError, SessionRegistry

log = logging.getLogger("glyphoxa.session_control")

REQUESTS = Counter("glyphoxa_session_control_requests_total", "API requests", ["verb", "result"])


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SESSION_CONTROL_", extra="ignore")


class SessionControlApp:
    def __init__(self, nc: Client, registry: SessionRegistry):
        self._nc, self._registry = nc, registry
        self._subs: list = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        routes = {
            "session.start": (StartSession, self._registry.start),
            "session.stop": (StopSession, self._registry.stop),
            "session.get": (GetSession, self._registry.get),
        }
        for verb, (model, action) in routes.items():
            self._subs.append(await self._nc.subscribe(
                api_subject(verb), queue="session-control", cb=self._handler(verb, model, action)))
        await self._stop.wait()

    def _handler(self, verb: str, model: type[BaseModel], action):  # type: ignore[no-untyped-def]
        async def handle(msg: Msg) -> None:
            reply = await self._serve(verb, model, action, msg.data)
            REQUESTS.labels(verb=verb, result="ok" if reply.ok else "error").inc()
            if msg.reply:
                await msg.respond(reply.model_dump_json(exclude_none=True).encode())
        return handle

    async def _serve(self, verb: str, model: type[BaseModel], action, data: bytes) -> ApiReply:  # type: ignore[no-untyped-def]
        if len(data) > MAX_EVENT_BYTES:
            return ApiReply(ok=False, error=f"request larger than {MAX_EVENT_BYTES} bytes")
        try:
            request = model.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            log.warning("rejected %s request: %s: %s", verb, where, first["msg"])
            return ApiReply(ok=False, error=f"invalid request: {where}: {first['msg']}")
        try:
            return ApiReply(ok=True, session=await action(request))
        except SessionError as exc:
            return ApiReply(ok=False, error=str(exc))
        except Exception as exc:  # noqa: BLE001
            log.exception("%s failed", verb)
            return ApiReply(ok=False, error=f"internal error: {type(exc).__name__}")

    async def shutdown(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._stop.set()

    def readiness(self) -> dict[str, object]:
        return {"ready": bool(self._subs)}


def main() -> None:
    settings = Settings()

    async def build(nc: Client, publisher: Publisher) -> SessionControlApp:
        return SessionControlApp(nc, await SessionRegistry.open(nc, publisher))

    asyncio.run(run_service("session-control", settings, build))


if __name__ == "__main__":
    main()
