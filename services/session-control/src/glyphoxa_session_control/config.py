"""session-control's settings (``SESSION_CONTROL_*``), composed with ``NATS_*``, ``PG_*``,
``METRICS_*``, ``MEMORY_*`` (campaign memory's embedder)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from glyphoxa_memory import MemorySettings
from glyphoxa_pg.settings import PgSettings
from glyphoxa_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SESSION_CONTROL_", extra="ignore")

    pg: PgSettings = Field(default_factory=PgSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    recap_retry_s: float = Field(
        30.0, gt=0, le=3600, description="a recap npc-brain was too busy for is asked again "
        "after this long; a failed one after this long doubled per attempt (5 attempts)")
    api_host: str = Field("127.0.0.1", description="bind address of the admin HTTP API")
    api_port: int = Field(8700, ge=0, le=65535, description="admin HTTP API port (0: a free one, logged)")
    operator_key: SecretStr = Field(
        SecretStr(""), description="bearer key of the operator (manages tenants); empty: "
                                   "tenant management is off")
    secret_keys: SecretStr = Field(
        SecretStr(""), description="Fernet keys, comma separated, that encrypt bot tokens and "
                                   "provider keys at rest (first encrypts; `glyphoxa secret-key` makes one)")
    liveness_interval_s: float = Field(1.0, gt=0, le=10, description="how often live sessions are checked")
    liveness_grace_s: float = Field(
        15.0, gt=0, le=120, description="a session whose edge or a stage has had no live holder "
                                        "this long is ended (a claim takeover must happen first)")
    ending_timeout_s: float = Field(10.0, gt=0, le=120,
                                    description="ending -> ended at the latest after this long")
    max_request_bytes: int = Field(1024 * 1024, ge=1024, description="largest admin API request body")
    allow_fake_providers: bool = Field(
        False, description="accept campaigns whose NPCs choose the `fake` (test double) LLM or "
                           "voice; for test stacks (`glyphoxa up --fake` sets it)")

    @field_validator("operator_key")
    @classmethod
    def _operator_key_strong(cls, key: SecretStr) -> SecretStr:
        if key.get_secret_value() and len(key.get_secret_value()) < 24:
            raise ValueError("must be at least 24 characters (or empty: tenant management off)")
        return key
