"""Pydantic models of a campaign. Unknown fields are errors, never silently ignored."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from glyphoxa_campaign.text import refuse_nul
from glyphoxa_events.tokens import slugify


class VoiceSpec(BaseModel):
    """How an NPC sounds. Keys a provider does not use are ignored by that provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str | None = Field(
        None, description="tts provider override (piper, espeak, elevenlabs)")
    length_scale: float = Field(1.0, ge=0.5, le=2.0, description="speaking slowness (piper)")
    pitch: float = Field(1.0, ge=0.5, le=2.0, description="pitch factor (1.0 = unchanged)")
    noise_scale: float | None = Field(None, ge=0.0, le=1.5, description="piper voice variation")
    espeak_voice: str = Field("en-us", pattern=r"^[a-zA-Z0-9_+-]{1,32}$", description="espeak-ng voice")
    rate: int = Field(165, ge=80, le=400, description="espeak-ng words per minute")
    elevenlabs_voice_id: str | None = Field(
        None, pattern=r"^[a-zA-Z0-9]{1,64}$",
        description="ElevenLabs voice id (default: the tts service's default voice)")
    stability: float | None = Field(None, ge=0.0, le=1.0, description="ElevenLabs stability")
    similarity_boost: float | None = Field(
        None, ge=0.0, le=1.0, description="ElevenLabs similarity boost")
    style: float | None = Field(None, ge=0.0, le=1.0, description="ElevenLabs style exaggeration")
    speed: float | None = Field(
        None, ge=0.7, le=1.2, description="ElevenLabs speaking speed (1.0 = the voice's own)")


FAKE = "fake"
"""The providers' test doubles (instant, scripted): for tests and ``glyphoxa up --fake``."""

LLMProviderName = Literal["llama", "gemini", "openai", "fake"]


class LLMSpec(BaseModel):
    """Which LLM answers as an NPC (``Npc.llm``) or, by default, as every NPC of a campaign
    (``Campaign.llm``). Unset fields fall back: NPC, then campaign, then npc-brain's
    settings (``BRAIN_LLM_PROVIDER``, ``BRAIN_GEMINI_MODEL``...). A ``model`` belongs to its
    ``provider``: an NPC naming another provider than its campaign does not inherit the
    campaign's model. npc-brain still falls back to ``BRAIN_LLM_FALLBACK`` when the chosen
    provider fails before it spoke."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: LLMProviderName | None = Field(
        None, description="LLM provider: llama (npc-brain's local model), gemini, openai "
        "(the OpenAI-compatible server npc-brain is configured with) or fake")
    model: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._:/-]{1,100}$",
        description="model name as the cloud provider knows it (e.g. gemini-2.5-flash-lite, "
        "gpt-4o-mini); llama and fake ignore it (the replica's own model serves)")
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="sampling temperature (default BRAIN_LLM_TEMPERATURE)")


class Npc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _storable(self) -> Npc:
        return refuse_nul(self)

    name: str = Field(min_length=1, max_length=64)
    aliases: tuple[str, ...] = ()
    persona: str = Field(min_length=1, max_length=4000)
    voice: VoiceSpec = VoiceSpec()
    address_only: bool = Field(False, description="answer only when named, never as a follow-up")
    llm: LLMSpec | None = Field(
        None, description="the LLM this NPC answers with; overrides the campaign's llm")
    knowledge: str = Field(
        "", max_length=4000,
        description="what this NPC knows from the start (facts, secrets, opinions); in its prompt only")
    scene: str | None = Field(
        None, min_length=1, max_length=64,
        description="where the NPC is (e.g. smithy); with the campaign's overhear, NPCs of one "
                    "scene remember what was said to each other")

    @field_validator("aliases")
    @classmethod
    def _aliases_not_empty(cls, aliases: tuple[str, ...]) -> tuple[str, ...]:
        for alias in aliases:
            if not alias.strip() or len(alias) > 64:
                raise ValueError("aliases must be non-empty names of at most 64 characters")
        return aliases

    @cached_property
    def token(self) -> str:
        """The NPC's subject token: "Captain Voss" -> "captain-voss"."""
        return slugify(self.name)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def fake_providers(self) -> list[str]:
        """``voice.provider`` / ``llm.provider`` where this NPC chooses the ``fake`` doubles."""
        return ([] if self.voice.provider != FAKE else ["voice.provider"]) + (
            ["llm.provider"] if self.llm is not None and self.llm.provider == FAKE else [])


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=120)
    npcs: tuple[Npc, ...] = Field(min_length=1, max_length=64)
    llm: LLMSpec | None = Field(
        None, description="the LLM every NPC answers with unless it names its own")
    lore: str = Field(
        "", max_length=8000,
        description="what every NPC of the campaign knows (the world, the town, its history)")
    overhear: bool = Field(
        False, description="NPCs with the same scene hear (and remember) what is said to each "
                           "other; otherwise an NPC remembers only what was said to it")
    gm_role: str | None = Field(
        None, min_length=1, max_length=100,
        description="the Discord role (name or id) whose members may run the control "
                    "commands (/session, /npc mute, /npc speak); without one, members who "
                    "may manage the server")

    @model_validator(mode="after")
    def _storable(self) -> Campaign:
        return refuse_nul(self)

    @model_validator(mode="after")
    def _unique_npcs(self) -> Campaign:
        seen: dict[str, str] = {}
        for i, npc in enumerate(self.npcs):
            if npc.token in seen:
                error = PydanticCustomError(
                    "name_collision", f"NPC names {seen[npc.token]!r} and {npc.name!r} collide "
                    f"(both become {npc.token!r})")
                raise ValidationError.from_exception_data("Campaign", [
                    InitErrorDetails(type=error, loc=("npcs", i, "name"), input=npc.name)])
            seen[npc.token] = npc.name
        return self

    def npc(self, token: str) -> Npc | None:
        return next((n for n in self.npcs if n.token == token), None)

    def present_with(self, token: str) -> tuple[str, ...]:
        """The NPCs in the scene of NPC ``token`` (itself first): those with the same
        ``scene``; an NPC without a scene is alone, as is one the campaign does not know."""
        npc = self.npc(token)
        if npc is None or npc.scene is None:
            return (token,)
        return (token, *(n.token for n in self.npcs if n.scene == npc.scene and n.token != token))

    def witnesses(self, token: str) -> tuple[str, ...]:
        """Who may remember a line said to NPC ``token`` and its reply (docs/adr/0007): that
        NPC, and with ``overhear`` every NPC of its scene. Nobody else, ever."""
        return self.present_with(token) if self.overhear else (token,)

    def fake_providers(self) -> list[str]:
        """Where the campaign chooses the ``fake`` test doubles (e.g. ``npcs.0.voice.provider``):
        a deployment serves them only when its operator started it with fakes."""
        found = ["llm.provider"] if self.llm is not None and self.llm.provider == FAKE else []
        for i, npc in enumerate(self.npcs):
            found += [f"npcs.{i}.{where}" for where in npc.fake_providers()]
        return found

    def proper_nouns(self) -> list[str]:
        """Names worth priming speech recognition with."""
        nouns: list[str] = []
        for npc in self.npcs:
            for name in npc.names:
                if name not in nouns:
                    nouns.append(name)
        return nouns
