"""Structured JSON logs. Fields passed with ``extra=`` (tenant, session, turn...) become keys.

Secrets are never logged; as a second line of defence every record is scrubbed of values
registered with ``register_secret``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName",
                                                   "color_message"}  # uvicorn's ANSI copy
_SECRETS: set[str] = set()
TRACE = 5
logging.addLevelName(TRACE, "TRACE")


MIN_SECRET_CHARS = 4
"""Shorter values are not scrubbed (every log line would lose its ``a``s); no key, token or
password of ours is that short."""


def register_secret(value: str | None) -> None:
    if value and len(value) >= MIN_SECRET_CHARS:
        _SECRETS.add(value)


def _scrub(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(out, default=str))


def setup_logging(service: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(TRACE if level.lower() == "trace" else level.upper())
    for noisy in ("nats", "asyncio", "faster_whisper", "httpx"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
