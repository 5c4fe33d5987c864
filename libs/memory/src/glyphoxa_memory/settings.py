"""``MEMORY_*`` settings, composed into the settings of the service that embeds (session-control)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MemorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore")

    embedder: Literal["local", "gemini", "off"] = Field(
        "local", description="local: MiniLM int8 on the CPU; gemini: Gemini embeddings; "
                             "off: no recall and no indexing (memories are still recorded)")
    gemini_model: str = Field("gemini-embedding-001", min_length=1,
                              description="the Gemini embedding model")
    gemini_api_key: SecretStr = Field(
        SecretStr(""), description="Gemini API key (a secret: never logged); needed for gemini")
    gemini_base_url: str | None = Field(
        None, description="another endpoint for the Gemini API (the tests' fake); "
                          "unset: Google's")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads of the "
                                                     "local embedder")
    kernels: Literal["integer", "float"] = Field(
        "integer", description="the local embedder's linear layers on integer kernels "
                               "(int8 activations per run, 1.6-2.5x faster) or fp32 ones; each "
                               "has its own model name, and a change re-embeds every memory "
                               "in the background (recall finds a memory again once it is)")
