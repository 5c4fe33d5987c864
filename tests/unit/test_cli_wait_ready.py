"""``glyphoxa up`` waiting for a service: when it gives up, it says what ``/readyz`` said."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from glyphoxa_cli.processes import ServiceProcess

NOT_READY = {"ready": False, "nats": "disconnected"}


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(NOT_READY).encode()
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_service_that_never_gets_ready_is_reported_with_its_readyz(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = ServiceProcess("stt", {}, tmp_path / "stt-1.log",
                              metrics_port=server.server_address[1])
        with pytest.raises(TimeoutError) as err:
            proc.wait_ready(timeout_s=0.5)
    finally:
        server.shutdown()
    assert str(err.value) == (f"stt not ready after 0 s (/readyz: {json.dumps(NOT_READY)}); "
                              f"see {tmp_path / 'stt-1.log'}")
