"""What k8s/ asks of the bus, against real nats-servers: a three-node JetStream cluster that
clients reach over TLS with a private CA (``NATS_TLS_CA``), streams and the heartbeat bucket
kept in three copies (``NATS_STREAM_REPLICAS=3``), and a client without the CA refused."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import nats
import pytest

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.streams import HEARTBEAT_BUCKET, WORK, stream_configs
from glyphoxa_cli.processes import free_port, nats_server_binary, stop_process
from glyphoxa_events.subjects import claim_subject
from tests.support.tls import make_ca_and_server_cert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Three nats-servers with JetStream in one cluster, clients over TLS only."""
    root = tmp_path_factory.mktemp("nats-cluster")
    certs = make_ca_and_server_cert(root)
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ", ".join(f"nats://127.0.0.1:{route}" for _, route, _ in ports)
    procs = []
    try:
        for i, (client, route, monitor) in enumerate(ports):
            conf = root / f"nats-{i}.conf"
            conf.write_text(f"""
server_name: nats-{i}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
tls {{ cert_file: "{certs['cert']}", key_file: "{certs['key']}", ca_file: "{certs['ca']}" }}
jetstream {{ store_dir: "{root / f'store-{i}'}" }}
cluster {{ name: glyphoxa, listen: 127.0.0.1:{route}, routes: [{routes}] }}
""")
            log = open(root / f"nats-{i}.log", "ab")
            procs.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        for _, _, monitor in ports:
            _wait_healthy(monitor)
        yield {"urls": [f"tls://localhost:{client}" for client, _, _ in ports],
               "ca": certs["ca"]}
    finally:
        for proc in procs:
            stop_process(proc)


def _wait_healthy(monitor_port: int, timeout_s: float = 30.0) -> None:
    """JetStream's meta leader is elected once /healthz answers 200 on every node."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz",
                                        timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nats-server on monitor port {monitor_port} not healthy")
        time.sleep(0.2)


async def test_streams_and_heartbeats_have_three_copies_over_tls(tls_cluster):
    settings = BusSettings(url=",".join(tls_cluster["urls"]), tls_ca=str(tls_cluster["ca"]),
                           stream_replicas=3)
    nc = await connect(settings, name="pytest-cluster")
    try:
        assert nc.is_connected and nc.connected_url.scheme == "tls"
        js = nc.jetstream()
        for config in stream_configs():
            info = await js.stream_info(config.name)
            assert info.config.num_replicas == 3, config.name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        bucket = await js.stream_info(f"KV_{HEARTBEAT_BUCKET}")
        assert bucket.config.num_replicas == 3
        from glyphoxa_session_control.registry import BUCKET, LiveRegistry

        await LiveRegistry.open(nc, settings.stream_replicas)  # session-control's own bucket
        assert (await js.stream_info(f"KV_{BUCKET}")).config.num_replicas == 3
        ack = await js.publish(claim_subject("stt", "t1", "s1"), b"")
        assert ack.stream == WORK
    finally:
        await nc.close()


async def test_a_client_without_the_ca_is_refused(tls_cluster):
    settings = BusSettings(url=tls_cluster["urls"][0])  # the system's trust store only
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    with pytest.raises(Exception):  # noqa: B017 - nats.py raises what the last try raised
        await asyncio.wait_for(nats.connect(servers=settings.servers(), tls=settings.tls_context(),
                                            allow_reconnect=False, max_reconnect_attempts=0,
                                            connect_timeout=2, error_cb=on_error), 10)
    assert any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in errors), errors
