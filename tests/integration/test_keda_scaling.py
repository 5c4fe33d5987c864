"""KEDA's scaling of a stage, reproduced against a real nats-server: the scaler's ``/jsz``
query on the monitoring port, the lag of the stage's claims consumer, the replicas the HPA
would want at the lagThreshold of k8s/base/scaling.yaml, that many stt replicas as real
processes serving every session, then a scale-down by SIGTERM that loses none of them.

Twice: on a server without accounts (KEDA's ``account: $G``) and on one with the account
GLYPHOXA and the users of glyphoxa_bus.auth (``account: GLYPHOXA``, as k8s/ deploys it), the
replicas logged in as ``stt`` and the test as the operator.

stt stands for every stage: all four claim sessions through the same ``ClaimWorker`` on
their own ``claims-<stage>`` consumer, and stt with its instant fake provider starts fastest.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from glyphoxa_bus.auth import ACCOUNT, OPERATOR, complete_passwords, server_config_for
from glyphoxa_bus.claims import publish_claims
from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.streams import (
    WORK,
    claims_consumer_name,
    ensure_claims_consumer,
    ensure_heartbeat_bucket,
    ensure_streams,
)
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_cli.processes import NatsServer, ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import SessionStarted, SessionStopped
from glyphoxa_events.subjects import SessionSubjects
from tests.support.keda import NO_ACCOUNTS, Scaler, jsz_url, scaling_numbers
from tests.support.service import http_get, wait_for

pytestmark = pytest.mark.integration

STAGE = "stt"
LEASE_S = 10.0
"""Long enough that a hand-over within HANDOVER_S can only be the SIGTERM's nak."""
HANDOVER_S = 5.0
CAMPAIGN = Campaign(name="Forge", npcs=(Npc(name="Greta", persona="A gruff blacksmith."),))


class Passwords(dict):
    """The users' passwords, never shown in a test report."""

    def __repr__(self) -> str:
        return f"<{len(self)} passwords>"


@pytest.fixture(params=[NO_ACCOUNTS, ACCOUNT])
def account(request: pytest.FixtureRequest) -> str:
    """The NATS account the stages' streams live in, as ``/jsz?acc=`` names it (the
    ScaledObjects' ``account``): ``$G`` on a server without accounts, GLYPHOXA with the
    users and permissions of glyphoxa_bus.auth (the services' and the operator's)."""
    return request.param


@pytest.fixture
def logins(account: str) -> dict[str, str]:
    if account == NO_ACCOUNTS:
        return Passwords()
    passwords = Passwords()
    complete_passwords(passwords)
    return passwords


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory, logins: dict[str, str]
           ) -> Iterator[NatsServer]:
    home = tmp_path_factory.mktemp("nats")
    config = None
    if logins:
        config = home / "auth.conf"
        config.write_text(server_config_for(logins))
    nats = NatsServer(home / "store", config=config, monitor=True).start()
    try:
        yield nats
    finally:
        nats.stop()


def login(logins: dict[str, str], user: str) -> dict[str, str]:
    return {"NATS_USER": user, "NATS_PASSWORD": logins[user]} if logins else {}


@pytest.fixture
async def bus(server: NatsServer, logins: dict[str, str]) -> AsyncIterator[object]:
    """The test's own connection: session-control's part, as the operator where there are
    users (who also declares the streams and the heartbeat bucket before any stage)."""
    you = login(logins, OPERATOR)
    settings = BusSettings(url=server.url, user=you.get("NATS_USER", ""),
                           password=you.get("NATS_PASSWORD", ""))
    nc = await connect(settings, name="keda-test")
    try:
        await ensure_streams(nc.jetstream())
        await ensure_heartbeat_bucket(nc.jetstream(), settings.heartbeat_ttl_s)
        yield nc
    finally:
        await nc.close()


class Replicas:
    """The stage's Deployment as the HPA scales it: replicas started and SIGTERMed."""

    def __init__(self, nats_url: str, logs: Path, capacity: int, env: dict[str, str]):
        self.nats_url, self.logs, self.capacity, self.env = nats_url, logs, capacity, env
        self.live: list[ServiceProcess] = []
        self.stopped: list[ServiceProcess] = []

    def scale_to(self, wanted: int) -> set[str]:
        """Start or SIGTERM replicas until ``wanted`` run; the sessions the stopped ones held."""
        dropped: set[str] = set()
        while len(self.live) < wanted:
            n = len(self.live) + len(self.stopped)
            self.live.append(ServiceProcess(STAGE, env={
                "NATS_URL": self.nats_url, "NATS_CLAIM_LEASE_S": str(LEASE_S),
                "STT_PROVIDER": "fake", "STT_CAPACITY": str(self.capacity),
                "SERVICE_REPLICA": f"{STAGE}-{n}", "LOG_LEVEL": "info", **self.env,
            }, log_path=self.logs / f"{STAGE}-{n}.log", name=f"{STAGE}-{n}").start())
        for replica in self.live:
            replica.wait_ready()
        while len(self.live) > wanted:
            # the ReplicaSet removes the replica with the most sessions: the hardest hand-over
            held = self.held()
            victim = max(self.live, key=lambda r: len(held[r.name]))
            dropped |= held[victim.name]
            victim.stop()  # SIGTERM, as the kubelet sends it
            assert victim.proc is not None and victim.proc.returncode == 0, victim.log_path
            self.live.remove(victim)
            self.stopped.append(victim)
        return dropped

    def held(self) -> dict[str, set[str]]:
        """Each live replica's sessions as its ``/readyz`` lists them."""
        out = {}
        for replica in self.live:
            state = json.loads(http_get(replica.metrics_port, "/readyz"))
            out[replica.name] = set(state.get("sessions", []))
        return out

    def serve_each_once(self, sessions: set[str]) -> bool:
        held = self.held()
        every = [s for replica in held.values() for s in replica]
        return sorted(every) == sorted(sessions) and all(
            len(s) <= self.capacity for s in held.values())

    def stop_all(self) -> None:
        for replica in self.live:
            replica.stop()


async def begin(nc, subjects: SessionSubjects) -> None:  # type: ignore[no-untyped-def]
    """What session-control does for a new session, for this one stage."""
    started = SessionStarted(campaign=CAMPAIGN, started_ns=time.time_ns())
    await nc.jetstream().publish(subjects.ctl("session.started"), started.to_bytes(), headers={
        H.MSG_ID: f"ctl:{subjects.tenant}.{subjects.session}:session.started:1"})
    await publish_claims(nc, subjects.tenant, subjects.session, [STAGE])


async def end(nc, subjects: SessionSubjects) -> None:  # type: ignore[no-untyped-def]
    stopped = SessionStopped(stopped_ns=time.time_ns())
    await nc.jetstream().publish(subjects.ctl("session.stopped"), stopped.to_bytes(), headers={
        H.MSG_ID: f"ctl:{subjects.tenant}.{subjects.session}:session.stopped:1"})


def test_the_query_is_the_scalers():
    """Go's url.Values.Encode: keys sorted, ``$`` escaped."""
    assert jsz_url("nats:8222", "$G") == "http://nats:8222/jsz?acc=%24G&config=true&consumers=true"


async def test_keda_scales_a_stage_on_its_sessions_and_a_scale_down_loses_none(
        server, bus, account, logins, tenant, tmp_path):
    numbers = scaling_numbers()
    capacity = int(numbers[f"{STAGE}-capacity"])
    threshold = int(numbers[f"{STAGE}-lag-threshold"])
    js = bus.jetstream()
    # the consumer exists before any session: the stage's replicas (KEDA's minReplicaCount
    # keeps one) or an earlier replica declared it
    await ensure_claims_consumer(js, STAGE, LEASE_S)
    scaler = Scaler(server.monitoring_endpoint, account, WORK, claims_consumer_name(STAGE),
                    threshold)
    assert scaler.lag() == 0 and scaler.replicas() == 0

    sessions = [SessionSubjects(tenant, f"s{i}") for i in range(2 * threshold + 1)]
    for subjects in sessions:
        await begin(bus, subjects)
    assert scaler.lag() == len(sessions)  # all pending: nobody holds them yet
    wanted = scaler.replicas()
    assert wanted == 3

    deployment = Replicas(server.url, tmp_path, capacity, login(logins, STAGE))
    try:
        deployment.scale_to(wanted)
        live = {f"{s.tenant}/{s.session}" for s in sessions}
        await wait_for(lambda: deployment.serve_each_once(live), 60)
        # held claims count as ack-pending: the lag stays, the HPA keeps its replicas
        assert scaler.lag() == len(sessions) and scaler.replicas() == wanted

        # sessions end; KEDA wants fewer replicas; SIGTERM hands the stopped one's over
        for keep in (threshold + 1, threshold):
            for subjects in sessions[keep:]:
                if f"{subjects.tenant}/{subjects.session}" in live:
                    await end(bus, subjects)
                    live.discard(f"{subjects.tenant}/{subjects.session}")
            await wait_for(lambda: scaler.lag() == len(live), 30)
            wanted = scaler.replicas()
            assert wanted == (2 if keep > threshold else 1)
            handed_over = deployment.scale_to(wanted)
            assert handed_over, "the stopped replica held no session: nothing was shown"
            await wait_for(lambda: deployment.serve_each_once(live), HANDOVER_S)
            assert scaler.lag() == len(live)
            assert scaler.replicas() == wanted

        for stopped in deployment.stopped:
            assert "Traceback" not in stopped.log_path.read_text()
    finally:
        deployment.stop_all()
