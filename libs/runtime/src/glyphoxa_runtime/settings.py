"""Lib-level settings pieces, composed into one pydantic-settings class per service.

Each piece has its own prefix (``NATS_*``, ``METRICS_*``); a service's own settings use
its prefix (``VAD_*``, ``STT_*``...). Settings are parsed once, in ``__main__``.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from glyphoxa_bus.connection import BusSettings


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METRICS_", extra="ignore")

    host: str = Field("127.0.0.1", description="bind address of /metrics, /healthz, /readyz")
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port (logged at start)")


class ServiceSettings(BaseSettings):
    """Base of every service's settings; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore")

    nats: BusSettings = Field(default_factory=BusSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log_level: str = Field("info", pattern=r"^(?i:trace|debug|info|warning|error)$",
                           validation_alias=AliasChoices("LOG_LEVEL"),
                           description="trace (per-frame), debug, info, warning or error")
    replica: str = Field("", description="replica name for logs and claims (default host-pid)",
                         validation_alias=AliasChoices("SERVICE_REPLICA"))
