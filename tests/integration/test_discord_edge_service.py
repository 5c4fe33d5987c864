"""discord-edge through its real entry point: it asks session-control for its tenants' bots,
starts each (here against a local stand-in for Discord's REST API that refuses the token,
since Discord cannot be reached), says clearly why a bot stopped without ever logging its
token, and follows changes to its tenants."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from aiohttp import web

from glyphoxa_cli.processes import ServiceProcess, free_port
from glyphoxa_session_control.crypto import new_secret_key
from tests.support.control import ControlProcess, module_control
from tests.support.service import wait_for

pytestmark = pytest.mark.integration

EDGE_KEY = new_secret_key()
control, nc = module_control("edge-svc", {"NATS_EDGE_KEY": EDGE_KEY})


class DiscordApi:
    """Discord's REST root for a bot logging in: ``GET /users/@me`` refused with 401, the
    way Discord answers a revoked token."""

    def __init__(self) -> None:
        self.logins: list[str] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def me(self, request: web.Request) -> web.Response:
        self.logins.append(request.headers.get("Authorization", ""))
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self.me)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/api/v10"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def ready(proc: ServiceProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/readyz", timeout=2) as r:
        return json.loads(r.read())


async def test_the_edge_runs_its_tenants_bots_and_follows_changes(control: ControlProcess,
                                                                  tmp_path):
    edge, tenant = "e" + uuid.uuid4().hex[:6], "svc" + uuid.uuid4().hex[:6]
    token = "MTA" + uuid.uuid4().hex + ".Gy." + uuid.uuid4().hex
    api = DiscordApi()
    base = await api.start()
    async with control.operator() as op:
        await op.call("POST", "/v1/tenants", json={"id": tenant, "name": "Edge table",
                                                   "bot_token": token, "discord_edge": edge})
    proc = ServiceProcess("discord-edge", {
        "NATS_URL": control.nats_url, "NATS_EDGE_KEY": EDGE_KEY, "DISCORD_EDGE_NAME": edge,
        "DISCORD_EDGE_API_BASE": base}, tmp_path / "edge.log").start()
    try:
        proc.wait_ready(30)
        await wait_for(lambda: "Discord refused the bot token" in proc.log_path.read_text(), 15)
        assert api.logins == [f"Bot {token}"]  # it really tried, with the tenant's token
        assert ready(proc)["bots"] == 1 and ready(proc)["bots_connected"] == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics",
                                    timeout=2) as r:
            metrics = r.read().decode()
        assert 'glyphoxa_discord_edge_bots{state="configured"} 1.0' in metrics
        assert 'glyphoxa_discord_edge_bots{state="connected"} 0.0' in metrics
        assert 'glyphoxa_discord_edge_voice_packets_total{result="decrypted"} 0.0' in metrics
        line = next(json.loads(x) for x in proc.log_path.read_text().splitlines()
                    if "refused the bot token" in x)
        assert line["tenant"] == tenant and line["level"] == "error"

        new_token = "MTA" + uuid.uuid4().hex + ".Gz." + uuid.uuid4().hex
        async with control.operator() as op:  # a new token: the bot restarts with it
            await op.call("PATCH", f"/v1/tenants/{tenant}", json={"bot_token": new_token})
        await wait_for(lambda: len(api.logins) == 2, 10)
        assert api.logins[1] == f"Bot {new_token}"
        async with control.operator() as op:  # disabled: its bot stops
            await op.call("PATCH", f"/v1/tenants/{tenant}", json={"disabled": True})
        await wait_for(lambda: ready(proc)["bots"] == 0, 10)
        text = proc.log_path.read_text()
        assert token not in text and new_token not in text
    finally:
        proc.stop()
        await api.stop()


async def test_without_an_edge_key_the_edge_says_so_and_runs_no_bot(control: ControlProcess,
                                                                    tmp_path):
    proc = ServiceProcess("discord-edge", {"NATS_URL": control.nats_url},
                          tmp_path / "edge.log").start()
    try:
        proc.wait_ready(30)
        await wait_for(lambda: "NATS_EDGE_KEY is not set" in proc.log_path.read_text(), 10)
        assert ready(proc)["bots"] == 0
    finally:
        proc.stop()
