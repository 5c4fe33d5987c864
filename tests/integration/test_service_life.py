"""A service's life as a supervisor sees it (compose's ``restart: on-failure``, Kubernetes
probes): it exits non-zero when it fails and 0 after SIGTERM, and ``/readyz`` is 503 while
NATS (and for session-control PostgreSQL) is unreachable, 200 again once it is back."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from glyphoxa_cli.postgres import PostgresServer, create_database
from glyphoxa_cli.processes import NatsServer, ServiceProcess, free_port
from tests.support.control import ControlProcess

pytestmark = pytest.mark.integration

FAILING_APP = textwrap.dedent("""
    import asyncio, sys
    from glyphoxa_runtime.service import serve
    from glyphoxa_runtime.settings import ServiceSettings

    class App:
        async def run(self):
            await asyncio.sleep(0.3)
            if sys.argv[1] == "raises":
                raise RuntimeError("the claims consumer is gone")
            if sys.argv[1] == "returns":
                return
            await asyncio.Event().wait()
        async def shutdown(self): pass
        def readiness(self): return {"ready": True}

    async def build(nc, publisher):
        print("built", flush=True)
        return App()

    serve("probe-app", ServiceSettings(), build)
""")


def run_app(nats_url: str, how: str, terminate: bool = False) -> subprocess.CompletedProcess:
    env = {"NATS_URL": nats_url, "NATS_DRAIN_TIMEOUT_S": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", FAILING_APP, how], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if terminate:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "built"
        time.sleep(0.5)
        proc.terminate()
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_failed_service_exits_non_zero_and_a_stopped_one_zero(nats_url):
    failed = run_app(nats_url, "raises")
    assert failed.returncode == 1
    assert "service failed" in failed.stderr and "the claims consumer is gone" in failed.stderr
    ended = run_app(nats_url, "returns")
    assert ended.returncode == 1
    assert "service stopped on its own" in ended.stderr
    stopped = run_app(nats_url, "waits", terminate=True)
    assert stopped.returncode == 0, stopped.stderr


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_readyz(port: int, status: int, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        got, state = readyz(port)
        if got == status:
            return state
        assert time.monotonic() < deadline, f"/readyz stayed {got}: {state}"
        time.sleep(0.1)


def test_readyz_is_503_while_nats_is_down_and_200_once_it_is_back(tmp_path):
    nats = NatsServer(tmp_path / "nats", port=free_port()).start()
    vad = ServiceProcess("vad", {"NATS_URL": nats.url, "VAD_ENGINE": "webrtc",
                                 "NATS_DRAIN_TIMEOUT_S": "1"}, tmp_path / "vad.log").start()
    try:
        vad.wait_ready(60)
        nats.stop()
        state = wait_readyz(vad.metrics_port, 503)
        assert state["nats"] is False and "NATS" in state["problem"]
        assert urllib.request.urlopen(f"http://127.0.0.1:{vad.metrics_port}/healthz").status == 200
        nats = NatsServer(tmp_path / "nats", port=nats.port).start()  # same port, same store
        state = wait_readyz(vad.metrics_port, 200)
        assert state["nats"] is True and "problem" not in state
        vad.stop()
        assert vad.proc is not None and vad.proc.returncode == 0
    finally:
        vad.stop()
        nats.stop()


def test_session_control_is_not_ready_while_postgres_is_down(tmp_path, nats_url):
    base = Path(tempfile.mkdtemp(prefix="glyphoxa-pg-"))  # as root, postgres runs as nobody
    base.chmod(0o755)
    pg = PostgresServer(base / "data", port=free_port(), fast=True).start()
    create_database(pg.dsn(), "glyphoxa_test_readyz")
    control = ControlProcess(nats_url, pg.dsn("glyphoxa_test_readyz"), tmp_path / "control.log",
                             env={"NATS_DRAIN_TIMEOUT_S": "1"}).start()
    assert control.proc is not None
    try:
        port = control.proc.metrics_port
        assert readyz(port)[1]["postgres"] is True
        pg.stop()
        state = wait_readyz(port, 503)
        assert state["postgres"] is False and "PostgreSQL" in state["problem"]
        pg = PostgresServer(base / "data", port=pg.port, fast=True).start()
        state = wait_readyz(port, 200)
        assert state["postgres"] is True and "problem" not in state
    finally:
        control.stop()
        pg.stop()
