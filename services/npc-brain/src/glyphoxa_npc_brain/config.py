"""npc-brain settings: ``BRAIN_*`` plus the lib pieces (``NATS_*``, ``METRICS_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from glyphoxa_runtime.settings import ServiceSettings


@dataclass(frozen=True)
class TurnPolicy:
    """How the core routes and answers; everything it needs from the settings."""

    followup_window_s: float = 30.0
    max_tokens: int = 60
    max_sentences: int = 3
    turn_timeout_s: float = 20.0
    history_exchanges: int = 6
    context_exchanges: int = 4
    npc_speak_grace_s: float = 0.3
    prime_personas: bool = True
    speculate: bool = True
    speculate_audio: bool = True
    first_clause: bool = False


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


LLMName = Literal["llama", "gemini", "openai", "fake"]
CLOUD_LLMS = ("gemini", "openai")


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BRAIN_", extra="ignore")

    llm_provider: LLMName = Field(
        "llama",
        description="llama (local GGUF), gemini (Google's API), openai (any OpenAI-compatible "
        "chat completions server) or fake; a campaign or NPC may choose another (llm:)",
    )
    llm_fallback: Annotated[tuple[LLMName, ...], NoDecode] = Field(
        (),
        description="providers tried in order when the chosen one fails before it spoke or its "
        "circuit breaker is open, comma-separated (e.g. llama)",
    )
    breaker_failures: int = Field(
        3, ge=1, le=100, description="retryable failures in a row that open an LLM provider's "
        "circuit breaker (turns skip it meanwhile)")
    breaker_cooldown_s: float = Field(
        30.0, gt=0, le=3600, description="how long an open breaker refuses before one trial call")
    llm_model_path: Path | None = Field(
        None, description="GGUF chat model; default: the bundled Qwen2.5-Coder-1.5B-Instruct Q4_K_M"
    )
    home: Path = Field(
        Path(".glyphoxa"),
        validation_alias=AliasChoices("GLYPHOXA_HOME", "BRAIN_HOME"),
        description="where models are kept (GLYPHOXA_HOME)",
    )
    llm_threads: int | None = Field(
        None, ge=1, le=64, description="CPU threads that generate the reply token by token; "
        "default: half the cores this process may use, 1 to 4 (1 on a 2-core machine, where a "
        "second thread mostly waits for a core another program holds)")
    llm_batch_threads: int | None = Field(
        None, ge=1, le=64, description="CPU threads that evaluate a prompt (persona, history, "
        "the player's line); default: every core this process may use, at most 8")
    llm_spin: bool = Field(
        False, description="llama.cpp's threads spin a while when they wait for each other, "
        "as OpenMP does by default, instead of sleeping at once (OMP_WAIT_POLICY=PASSIVE): a "
        "little faster on an idle machine, several times slower when another program "
        "(Discord, a browser) holds a core")
    llm_ctx: int = Field(2048, ge=256, le=32768, description="context window in tokens")
    llm_batch: int = Field(128, ge=8, le=4096, description="prompt evaluation batch size")
    llm_cache_mb: int = Field(256, ge=0, le=65536, description="RAM for cached prompt prefixes")
    llm_temperature: float = Field(0.6, ge=0.0, le=2.0)
    llm_first_token_timeout_s: float = Field(10.0, gt=0)
    gemini_api_key: SecretStr = Field(
        SecretStr(""), description="Gemini API key (required with BRAIN_LLM_PROVIDER=gemini)"
    )
    gemini_model: str = Field(
        "gemini-2.5-flash", min_length=1, description="Gemini model (a fast one: -flash, -flash-lite)"
    )
    gemini_base_url: str = Field(
        "https://generativelanguage.googleapis.com/", description="Gemini API endpoint"
    )
    gemini_thinking_budget: int = Field(
        0, ge=-1, description="thought tokens before answering: 0 off (fast first words), "
        "-1 the model decides"
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1", description="OpenAI-compatible server, e.g. "
        "http://127.0.0.1:11434/v1 for Ollama"
    )
    openai_model: str = Field(
        "gpt-4o-mini", min_length=1, description="model name as that server knows it"
    )
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="API key (required for api.openai.com; local servers need none)"
    )
    max_tokens: int = Field(60, ge=1, le=1024, description="longest reply in tokens")
    max_sentences: int = Field(3, ge=1, le=20, description="longest reply in sentences")
    first_clause: bool = Field(
        True, description="speak a reply's first clause as soon as it is written (\"Aye, | I "
                          "can mend it by morning.\"), not only its first sentence: first audio "
                          "comes sooner, with a short pause after the clause")
    turn_timeout_s: float = Field(20.0, gt=0, description="a turn that takes longer times out")
    followup_window_s: float = Field(
        30.0,
        ge=0,
        description="an unnamed line is a follow-up this long after the last address "
        "(utterance capture time)",
    )
    history_exchanges: int = Field(
        6, ge=0, le=100, description="past exchanges with the NPC in the prompt"
    )
    context_exchanges: int = Field(
        0, ge=0, le=100, description="recent exchanges with other NPCs in the prompt (the bundled "
        "1.5B model takes them for its own conversation: raise this for larger models)"
    )
    prime_personas: bool = Field(True, description="evaluate each persona when a session starts")
    speculate: bool = Field(
        True, description="start an NPC's reply on the interim transcript of a streaming "
        "recognizer (Deepgram; local whisper publishes none), kept when the final says the "
        "same: replies come ~0.75 s sooner, a discarded guess costs its tokens (false saves "
        "them)")
    speculate_audio: bool = Field(
        True, description="with BRAIN_SPECULATE, tts also synthesizes a guessed reply's first "
        "sentence ahead, held until the final confirms the guess: first audio comes right "
        "after the final; a discarded guess costs its sentence's characters too")
    capacity: int = Field(8, ge=1, le=1000, description="sessions one replica serves at once")
    recall: bool = Field(
        True, description="ask session-control for the addressed NPC's memories of earlier "
        "sessions on every turn (docs/memory.md)")
    recall_timeout_ms: int = Field(
        150, ge=10, le=5000, description="how long a turn waits for its memories; a later or "
        "failed recall lets the turn go on without them (counted)")
    recall_k: int = Field(5, ge=1, le=20, description="memories asked for per turn")
    recap_quiet_s: float = Field(
        10.0, ge=0.0, le=3600.0, description="a recap on the local model waits until no turn has "
        "started on this replica for this long (it answers busy and is asked again later)")
    recap_timeout_s: float = Field(
        240.0, ge=5.0, le=3600.0, description="longest a recap may take")
    recap_max_tokens: int = Field(220, ge=32, le=2048, description="longest recap in tokens")

    @field_validator("llm_fallback", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip().lower() for name in value.split(",") if name.strip())
        return value

    @model_validator(mode="after")
    def _fallbacks_differ(self) -> Settings:
        if self.llm_provider in self.llm_fallback:
            raise ValueError(
                f"BRAIN_LLM_FALLBACK lists {self.llm_provider}, which is BRAIN_LLM_PROVIDER "
                "itself: a provider is not its own fallback"
            )
        if len(set(self.llm_fallback)) < len(self.llm_fallback):
            raise ValueError("BRAIN_LLM_FALLBACK lists a provider twice")
        return self

    @model_validator(mode="after")
    def _key_of_the_cloud_provider(self) -> Settings:
        if self.nats.secrets_key.get_secret_value():
            return self  # tenants may bring their own keys; one without any falls back
        for provider in (self.llm_provider, *self.llm_fallback):
            primary = provider == self.llm_provider
            chosen = "BRAIN_LLM_PROVIDER=" if primary else "BRAIN_LLM_FALLBACK has "
            if provider == "gemini" and not self.gemini_api_key.get_secret_value():
                raise ValueError(f"BRAIN_GEMINI_API_KEY is required when {chosen}gemini")
            if provider == "openai" and not self._openai_key_ok():
                raise ValueError(
                    f"BRAIN_OPENAI_API_KEY is required for api.openai.com ({chosen}openai; "
                    "or set BRAIN_OPENAI_BASE_URL to a server that needs none)"
                )
        return self

    def _openai_key_ok(self) -> bool:
        """A key is configured, or the OpenAI-compatible server is one that needs none."""
        return bool(self.openai_api_key.get_secret_value()) or (
            urlparse(self.openai_base_url).hostname != "api.openai.com"
        )

    def api_key(self, provider: str) -> str:
        """The configured API key of a cloud provider ("" for the local ones)."""
        if provider == "gemini":
            return self.gemini_api_key.get_secret_value()
        if provider == "openai":
            return self.openai_api_key.get_secret_value()
        return ""

    def secrets(self) -> list[str]:
        """The values no log line may show."""
        return [self.gemini_api_key.get_secret_value(), self.openai_api_key.get_secret_value()]

    def llm_thread_counts(self) -> tuple[int, int]:
        """(generation threads, prompt evaluation threads), the defaults sized to the cores
        this process may use."""
        cores = usable_cores()
        generate = self.llm_threads or max(1, min(4, cores // 2))
        evaluate = self.llm_batch_threads or max(1, min(8, cores))
        return generate, evaluate

    def turn_policy(self) -> TurnPolicy:
        return TurnPolicy(
            followup_window_s=self.followup_window_s,
            max_tokens=self.max_tokens,
            max_sentences=self.max_sentences,
            turn_timeout_s=self.turn_timeout_s,
            history_exchanges=self.history_exchanges,
            context_exchanges=self.context_exchanges,
            prime_personas=self.prime_personas,
            speculate=self.speculate,
            speculate_audio=self.speculate_audio,
            first_clause=self.first_clause,
        )
