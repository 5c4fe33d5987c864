"""Lib-level settings pieces, composed into one pydantic-settings class per service.

Each piece has its own prefix (``NATS_*``, ``METRICS_*``); a service's own settings use
its prefix (``VAD_*``, ``STT_*``...). Settings are parsed once, in ``__main__``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from glyphoxa_bus.connection import BusSettings
from glyphoxa_runtime.tracing import TracingSettings

_S = TypeVar("_S", bound=BaseSettings)


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METRICS_", extra="ignore")

    host: str = Field("127.0.0.1", description="bind address of /metrics, /healthz, /readyz")
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port (logged at start)")


class ServiceSettings(BaseSettings):
    """Base of every service's settings; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore")

    nats: BusSettings = Field(default_factory=BusSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    log_level: str = Field("info", pattern=r"^(?i:trace|debug|info|warning|error)$",
                           validation_alias=AliasChoices("LOG_LEVEL"),
                           description="trace (per-frame), debug, info, warning or error")
    replica: str = Field("", description="replica name for logs and claims (default host-pid)",
                         validation_alias=AliasChoices("SERVICE_REPLICA"))


SECRETS_DIR_VARIABLE = "GLYPHOXA_SECRETS_DIR"
_SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")


def read_secrets_dir(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Settings kept as files: every file in ``$GLYPHOXA_SECRETS_DIR`` named like a variable
    (``NATS_SECRETS_KEY``) sets that variable to its content (surrounding whitespace
    stripped), unless the environment already gives it a non-empty value. This is how
    Docker and Kubernetes hand secrets to a container (a volume or a mounted ``Secret``), so
    no key needs to sit in a compose file or a pod spec. Returns the names it set."""
    directory = environ.get(SECRETS_DIR_VARIABLE, "")
    if not directory:
        return []
    root = Path(directory)
    if not root.is_dir():
        raise SecretsDirError(f"{SECRETS_DIR_VARIABLE}: {directory} is not a directory")
    taken = []
    for path in sorted(root.iterdir()):
        if not _SECRET_NAME.match(path.name) or not path.is_file() or environ.get(path.name):
            continue
        try:
            environ[path.name] = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsDirError(f"{SECRETS_DIR_VARIABLE}: cannot read {path.name} "
                                  f"({type(exc).__name__})") from None
        taken.append(path.name)
    return taken


class SecretsDirError(ValueError):
    """``GLYPHOXA_SECRETS_DIR`` names no directory, or a file in it cannot be read."""


def load_settings(cls: type[_S], service: str) -> _S:
    """Parse a service's settings once, at start (after ``read_secrets_dir``); bad
    configuration ends the process with one line per mistake naming the variable, never
    echoing its value (it may be a secret)."""
    try:
        read_secrets_dir()
    except SecretsDirError as exc:
        print(f"{service}: invalid configuration:\n  {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        return cls()
    except ValidationError as exc:
        owner = _part_named(cls, exc.title) or cls  # a nested part (NATS_*, PG_*) failed alone
        lines = [f"{service}: invalid configuration:"]
        for err in exc.errors():
            message = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
            name = env_name(owner, tuple(err["loc"]))
            lines.append(f"  {name}: {message}" if name else f"  {message}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def env_name(cls: type[BaseSettings], loc: tuple) -> str:
    """The environment variable behind a validation error's location."""
    if not loc:
        return ""
    field = cls.model_fields.get(str(loc[0]))
    if field is None:  # located by an alias (LOG_LEVEL, SERVICE_REPLICA): that is the variable
        aliases = {str(c) for f in cls.model_fields.values()
                   for c in getattr(f.validation_alias, "choices", ())}
        if str(loc[0]) in aliases:
            return str(loc[0])
        return (cls.model_config.get("env_prefix", "") + "_".join(map(str, loc))).upper()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
        return env_name(field.annotation, loc[1:])
    alias = field.validation_alias
    if alias is not None and hasattr(alias, "choices"):
        return str(alias.choices[0])
    return (cls.model_config.get("env_prefix", "") + str(loc[0])).upper()


def _part_named(cls: type[BaseSettings], title: str) -> type[BaseSettings] | None:
    if cls.__name__ == title:
        return cls
    for field in cls.model_fields.values():
        part = field.annotation
        if isinstance(part, type) and issubclass(part, BaseSettings):
            found = _part_named(part, title)
            if found is not None:
                return found
    return None
