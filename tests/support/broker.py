"""A nats-server a test can kill -9, pause, and start again on the same port and store."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from glyphoxa_cli.processes import NatsServer, free_port


class Broker:
    def __init__(self, store: Path):
        self.server = NatsServer(store, port=free_port()).start()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def kill9(self) -> None:
        """kill -9: whatever the server had taken but not yet stored is lost with it."""
        os.kill(self.pid, signal.SIGCONT)  # (a paused server dies just the same)
        os.kill(self.pid, signal.SIGKILL)
        assert self.server.proc is not None
        self.server.proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: clients' messages pile up in its socket, unread and unacknowledged."""
        os.kill(self.pid, signal.SIGSTOP)

    def restart(self) -> None:
        self.server = NatsServer(self.server.store_dir, port=self.server.port).start()

    def stop(self) -> None:
        if self.server.proc is not None and self.server.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
        self.server.stop()
