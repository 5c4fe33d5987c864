"""What k8s/ asks of the bus, against real nats-servers: a three-node JetStream cluster that
clients reach over TLS with a private CA (``NATS_TLS_CA``), streams and the heartbeat bucket
kept in three copies (``NATS_STREAM_REPLICAS=3``), and a client without the CA refused."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NoStreamResponseError

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.streams import HEARTBEAT_BUCKET, WORK, stream_configs
from glyphoxa_cli.processes import free_port, nats_server_binary, stop_process
from glyphoxa_events.subjects import claim_subject
from tests.support.tls import make_ca_and_server_cert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Three nats-servers with JetStream in one cluster, clients over TLS only.

    The nine ports are free when picked but not held, so another process may take one before
    its server binds it (a CI run saw a node never become healthy): a node that exits is a
    lost race, and the cluster starts again on new ports, up to three times."""
    root = tmp_path_factory.mktemp("nats-cluster")
    certs = make_ca_and_server_cert(root)
    for attempt in range(3):
        procs, ports, logs = _start_cluster(root / f"try-{attempt}", certs)
        try:
            _wait_healthy(ports, procs, logs)
        except _NodeExited:
            for proc in procs:
                stop_process(proc)
            continue
        except BaseException:
            for proc in procs:
                stop_process(proc)
            raise
        try:
            yield {"urls": [f"tls://localhost:{client}" for client, _, _ in ports],
                   "ca": certs["ca"]}
        finally:
            for proc in procs:
                stop_process(proc)
        return
    raise RuntimeError("three tries to start the cluster each lost a node; logs under "
                       f"{root}")


class _NodeExited(Exception):
    pass


def _start_cluster(root: Path, certs: dict) -> tuple[list[subprocess.Popen], list, list[Path]]:
    root.mkdir(parents=True)
    ports: list[int] = []
    while len(ports) < 9:  # nine different ports
        if (port := free_port()) not in ports:
            ports.append(port)
    nodes = [tuple(ports[i:i + 3]) for i in range(0, 9, 3)]
    routes = ", ".join(f"nats://127.0.0.1:{route}" for _, route, _ in nodes)
    procs, logs = [], []
    for i, (client, route, monitor) in enumerate(nodes):
        conf = root / f"nats-{i}.conf"
        conf.write_text(f"""
server_name: nats-{i}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
tls {{ cert_file: "{certs['cert']}", key_file: "{certs['key']}", ca_file: "{certs['ca']}" }}
jetstream {{ store_dir: "{root / f'store-{i}'}" }}
cluster {{ name: glyphoxa, listen: 127.0.0.1:{route}, routes: [{routes}] }}
""")
        logs.append(root / f"nats-{i}.log")
        with open(logs[-1], "ab") as log:
            procs.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    return procs, nodes, logs


def _wait_healthy(nodes: list, procs: list[subprocess.Popen], logs: list[Path],
                  timeout_s: float = 60.0) -> None:
    """JetStream's meta leader is elected once /healthz answers 200 on every node."""
    deadline = time.monotonic() + timeout_s
    waiting = list(range(len(nodes)))
    while waiting:
        i = waiting[0]
        if procs[i].poll() is not None:
            raise _NodeExited(i)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{nodes[i][2]}/healthz",
                                        timeout=2) as answer:
                if answer.status == 200:
                    waiting.pop(0)
                    continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-2000:]
                               for log in logs)
            raise TimeoutError(f"nats-{i} (monitor port {nodes[i][2]}) not healthy after "
                               f"{timeout_s:.0f} s\n{tails}")
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
        # a just-made R3 stream may not be reachable from every server for a moment (its
        # leader elected, the interest not yet routed: "no responders", once in a CI run)
        deadline = time.monotonic() + 10
        while True:
            try:
                ack = await js.publish(claim_subject("stt", "t1", "s1"), b"")
                break
            except NoStreamResponseError:
                assert time.monotonic() < deadline, "the WORK stream never answered a publish"
                await asyncio.sleep(0.2)
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
