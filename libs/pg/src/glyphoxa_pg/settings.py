"""``PG_*`` settings, composed into the settings of every service that uses PostgreSQL."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PgSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PG_", extra="ignore")

    dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/glyphoxa"),
        description="libpq connection string or URL (its password is a secret: never logged)",
    )
    pool_min: int = Field(1, ge=0, le=100, description="connections kept open")
    pool_max: int = Field(8, ge=1, le=200, description="most connections at once")
    connect_timeout_s: float = Field(30.0, gt=0, description="start-up: how long to wait for the server")
    statement_timeout_s: float = Field(10.0, gt=0, description="longest single statement")
    pool_timeout_s: float = Field(
        5.0, gt=0, description="longest wait for a pooled connection; while PostgreSQL is "
                               "down a caller fails after this long at most")
