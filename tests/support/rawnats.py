"""A bare NATS protocol connection, for what nats.py cannot publish but any other client can,
and the server takes: a subject that is not UTF-8."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit


class RawPublisher:
    """``async with RawPublisher(url) as raw: raw.publish(subject_bytes, data, reply=inbox)``;
    ``reply``: where JetStream sends its ack."""

    def __init__(self, url: str):
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 4222
        self._login = ({"user": unquote(parts.username), "pass": unquote(parts.password)}
                       if parts.username and parts.password is not None else {})
        self._pongs: asyncio.Queue[None] = asyncio.Queue()
        self.errors: list[bytes] = []

    async def __aenter__(self) -> RawPublisher:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        await self._reader.readline()  # INFO
        options = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1,
                   **self._login}
        self._writer.write(b"CONNECT " + json.dumps(options).encode() + b"\r\n")
        self._task = asyncio.create_task(self._read(), name="raw-nats-read")
        await self.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def publish(self, subject: bytes, data: bytes, headers: Mapping[str, str] | None = None,
                reply: str = "") -> None:
        block = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
        block += b"\r\n"
        to = b" " + reply.encode() if reply else b""
        self._writer.write(b"HPUB " + subject + to + f" {len(block)} {len(block) + len(data)}\r\n".encode()
                           + block + data + b"\r\n")

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Everything published so far has reached the server."""
        self._writer.write(b"PING\r\n")
        await self._writer.drain()
        await asyncio.wait_for(self._pongs.get(), timeout_s)

    async def _read(self) -> None:
        while line := await self._reader.readline():
            if line.startswith(b"PING"):
                self._writer.write(b"PONG\r\n")
            elif line.startswith(b"PONG"):
                self._pongs.put_nowait(None)
            elif line.startswith(b"-ERR"):
                self.errors.append(line)
