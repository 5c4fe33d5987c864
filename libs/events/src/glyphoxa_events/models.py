"""Every JSON event that crosses the bus. Audio is never in here: it travels as raw bytes.

Each model forbids unknown fields and carries the ids needed to trace a turn end to end
(utterance/turn id and the speech-end time of the utterance that caused it).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from glyphoxa_campaign import Campaign
from glyphoxa_campaign.text import refuse_nul
from glyphoxa_events.tokens import TOKEN_PATTERN, Token

MAX_EVENT_BYTES = 64 * 1024
"""Largest JSON event accepted anywhere; larger bodies are rejected unparsed."""

Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,127}$")]
Ns = Annotated[int, Field(ge=0)]


class Event(BaseModel):
    # no NaN or infinity in any number: JSON has none, but the parser reads ``Infinity`` (and
    # ``1e400`` overflows to it), and one such usage amount made a tenant's usage infinite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


E = TypeVar("E", bound=Event)


class MalformedEvent(ValueError):
    """A message body that is not the event its subject promises."""


# --- vad ---------------------------------------------------------------------------------


class UtteranceStarted(Event):
    type: Literal["utterance.started"] = "utterance.started"
    utterance_id: Id
    speaker: Token
    start_ns: Ns = Field(description="capture time of the first speech frame (unix ns)")


class UtteranceEnded(Event):
    type: Literal["utterance.ended"] = "utterance.ended"
    utterance_id: Id
    speaker: Token
    start_ns: Ns
    speech_end_ns: Ns = Field(description="capture time at which speech ended (unix ns)")
    chunks: int = Field(ge=0, description="number of PCM chunks published for this utterance")
    audio_ms: int = Field(ge=0)
    vad_end_ns: Ns = Field(description="wall-clock time vad decided the utterance was over")


VadEvent = Annotated[UtteranceStarted | UtteranceEnded, Field(discriminator="type")]

# --- stt ---------------------------------------------------------------------------------


class Transcript(Event):
    utterance_id: Id
    speaker: Token
    text: str = Field(max_length=4000)
    final: bool
    start_ns: Ns
    speech_end_ns: Ns
    vad_end_ns: Ns = 0
    stt_final_ns: Ns = Field(0, description="wall-clock time the final transcript was ready")
    audio_seconds: float = Field(0.0, ge=0)
    provider: str = ""
    error: str = Field("", max_length=500, description="why there is no text (stt failed)")


# --- reply -------------------------------------------------------------------------------


class ReplyChunk(Event):
    turn_id: Id
    npc: Token
    index: int = Field(ge=0)
    text: str = Field(max_length=4000)
    final: bool = Field(description="last chunk of the turn (its text may be empty)")
    speech_end_ns: Ns = 0
    first_token_ns: Ns = 0
    published_ns: Ns = 0
    hold: bool = Field(False, description=(
        "a guessed reply's first sentence (BRAIN_SPECULATE): tts synthesizes it but publishes "
        "nothing until a real turn's chunk claims it; a held turn's empty final chunk "
        "discards it"))
    claims: Id | None = Field(None, description=(
        "the held turn whose audio speaks this chunk (same NPC and text); tts synthesizes "
        "the text itself when it holds no such audio"))


# --- usage -------------------------------------------------------------------------------

UsageMetric = Literal["stt_audio_seconds", "llm_tokens_in", "llm_tokens_out", "tts_characters"]


class Usage(Event):
    """Metered provider work of one session (``glx.T.S.usage.<stage>``), for usage and quotas.

    ``key`` identifies the unit of work within the session and metric (``stt:<utterance>``,
    ``llm:<turn>:<attempt>``, ``tts:<turn>:<chunk index>``): a replica redoing the work
    after a failover publishes the same key, so each unit is counted once.
    """

    type: Literal["usage"] = "usage"
    key: str = Field(min_length=1, max_length=200,
                     description="idempotency key, unique within the session for this metric")
    metric: UsageMetric
    amount: float = Field(ge=0)
    provider: str = Field(min_length=1, max_length=64, description="short provider name")
    stage: Token


# --- control -----------------------------------------------------------------------------


class Outcome(StrEnum):
    answered = "answered"
    not_addressed = "not_addressed"
    cancelled = "cancelled"
    failed = "failed"
    timed_out = "timed_out"
    muted = "muted"


MAX_SEED_RECAP_CHARS = 2000
"""Longest recap of one NPC a ``session.started`` carries (npc-brain puts less in a prompt)."""
MAX_FACT_CHARS = 300
"""Longest fact a GM teaches an NPC (``/npc teach``, the admin API)."""
MAX_SEED_FACTS = 20
"""Facts of one NPC a ``session.started`` carries at most (the newest)."""
MAX_SEED_NPCS = 64
"""As many NPCs as a campaign has at most."""

Recap = Annotated[str, Field(max_length=MAX_SEED_RECAP_CHARS)]
Fact = Annotated[str, Field(min_length=1, max_length=MAX_FACT_CHARS, pattern=r"\S")]


class SessionMemorySeed(BaseModel):
    """What each NPC remembers of earlier sessions when a session starts (docs/adr/0007):
    npc-brain puts it into the NPC's system prompt. Keyed by NPC token; an NPC the campaign
    does not have is ignored. The publisher keeps the whole ``session.started`` under
    ``MAX_EVENT_BYTES`` (64 KiB, campaign included): it leaves out the oldest facts and
    shortens recaps first."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _storable(self) -> SessionMemorySeed:
        return refuse_nul(self)

    recaps: dict[Token, Recap] = Field(
        default_factory=dict, max_length=MAX_SEED_NPCS,
        description="the NPC's latest recap (of the sessions it took part in, newest first)")
    facts: dict[Token, Annotated[list[Fact], Field(max_length=MAX_SEED_FACTS)]] = Field(
        default_factory=dict, max_length=MAX_SEED_NPCS,
        description="facts the GM taught the NPC, oldest first")

    @property
    def empty(self) -> bool:
        return not (self.recaps or self.facts)


class SessionStarted(Event):
    type: Literal["session.started"] = "session.started"
    campaign: Campaign
    edge: str = Field("scene", max_length=64)
    started_ns: Ns
    memory: SessionMemorySeed = Field(
        default_factory=SessionMemorySeed,
        description="the NPCs' recaps and taught facts as they were when the session started")

    def to_bytes(self) -> bytes:
        # without memory, the event is as it was before it had any (a reader of before parses it)
        return self.model_dump_json(
            exclude_none=True, exclude={"memory"} if self.memory.empty else None).encode()


class SessionStopped(Event):
    type: Literal["session.stopped"] = "session.stopped"
    reason: str = Field("stopped", max_length=500)
    stopped_ns: Ns = 0


class Speaker(Event):
    type: Literal["speaker"] = "speaker"
    speaker: Token
    display_name: str = Field(max_length=100)


class BargeIn(Event):
    type: Literal["bargein"] = "bargein"
    speaker: Token
    at_ns: Ns


class Flush(Event):
    type: Literal["flush"] = "flush"
    turn_id: Id | None = None
    npc: Token | None = None
    reason: str = Field("bargein", max_length=200)


class Played(Event):
    """What the players actually heard of a turn: only this enters transcripts and memory.

    ``complete`` with an empty ``text_heard``: heard to the end, but the edge never learnt
    the reply's text (its turn event did not reach it); the reply stands as generated."""

    type: Literal["played"] = "played"
    turn_id: Id
    npc: Token
    text_heard: str = Field(max_length=4000)
    complete: bool
    first_played_ns: Ns = 0


class NpcMute(Event):
    type: Literal["npc.mute"] = "npc.mute"
    npc: Token | Literal["*"]
    muted: bool


class NpcSpeak(Event):
    """The GM puppets an NPC: the text is spoken as is, without the LLM."""

    type: Literal["npc.speak"] = "npc.speak"
    npc: Token
    text: str = Field(min_length=1, max_length=1000)
    request_id: Id


class NpcTaught(Event):
    """The GM taught an NPC a fact during the session (``/npc teach``, the admin API): from
    now on it is in that NPC's system prompt, and only in that NPC's. The same ``fact_id``
    twice is one fact."""

    type: Literal["npc.taught"] = "npc.taught"
    npc: Token
    fact_id: Id = Field(description="the fact's id in session-control's store")
    text: Fact

    @model_validator(mode="after")
    def _storable(self) -> NpcTaught:
        return refuse_nul(self)


class NpcForgot(Event):
    """The GM deleted a fact an NPC was taught, or corrected it (then an ``npc.taught`` with
    the new text follows): from now on ``text`` is no longer in that NPC's system prompt,
    whether the session started with it or it was taught since."""

    type: Literal["npc.forgot"] = "npc.forgot"
    npc: Token
    fact_id: Id = Field(description="the fact's id in session-control's store")
    text: Fact = Field(description="what the NPC no longer knows (the fact as it was)")

    @model_validator(mode="after")
    def _storable(self) -> NpcForgot:
        return refuse_nul(self)


class TurnLatency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    speech_end_ns: Ns = 0
    vad_end_ns: Ns = 0
    stt_final_ns: Ns = 0
    first_token_ns: Ns = 0
    first_sentence_ns: Ns = 0


class RouteKind(StrEnum):
    """How npc-brain decided who a line was for (docs/debugging.md)."""

    name_start = "name_start"  # an NPC named at the start of the line ("Greta, ...")
    name_end = "name_end"  # an NPC named at the end ("..., Captain Voss?")
    followup = "followup"  # no name: the NPC addressed last, recently enough
    only_npc = "only_npc"  # no name: the campaign's only NPC
    table_talk = "table_talk"  # meant for the table: a name in the third person, dice, ...
    none = "none"  # nobody named and no conversation going on


class NameMatch(StrEnum):
    """How the heard words matched a name: as spelt, close in spelling, or close in sound."""

    exact = "exact"
    fuzzy = "fuzzy"
    phonetic = "phonetic"


NameKind = Literal["name", "alias", "part"]
"""Which of an NPC's names matched: its name, one of its aliases, or one word of either
("Voss" of "Captain Voss")."""

TableTalkCueKind = Literal["aside", "mechanics", "out_of_game", "narration", "asks_table"]


class RoutingExplained(BaseModel):
    """Why a turn went to the NPC it went to (or to nobody), in fields a tool can read.

    A name (addressed, or for table talk mentioned) is given as the campaign spells it
    (``name``), as it was heard (``matched``, the transcript's ``start``:``end`` characters,
    beginning at word ``word``), and how it matched (``match``, ``score`` 0..100). A
    follow-up gives how long after the last addressed line (speech end to speech end) this
    one came; ``why`` says the same in words."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: RouteKind
    npc: Token | None = Field(None, description="the addressed NPC, if any")
    name: str | None = Field(None, max_length=200, description=(
        "the NPC's name or alias as the campaign spells it that matched (addressed or "
        "mentioned)"))
    name_kind: NameKind | None = None
    matched: str | None = Field(None, max_length=200,
                                description="the words of the transcript that matched")
    word: int | None = Field(None, ge=0, description="index of the first matched word")
    start: int | None = Field(None, ge=0, description="character offset of the match")
    end: int | None = Field(None, ge=0, description="character offset after the match")
    match: NameMatch | None = None
    score: float | None = Field(None, ge=0, le=100)
    mentioned: Token | None = Field(None, description=(
        "table talk: the NPC named in the line in a way that does not address it"))
    cue: TableTalkCueKind | None = Field(None, description="table talk: the kind of sign")
    last_npc: Token | None = Field(None, description="the NPC addressed last, if any")
    since_last_ms: int | None = Field(None, ge=0, description=(
        "between the last addressed line's speech end and this one's"))
    window_ms: int | None = Field(None, ge=0, description="the follow-up window")
    why: str = Field("", max_length=300, description="the same, in words")

    @property
    def label(self) -> str:
        """A bounded metric label: the route kind, with how a name matched or what made the
        line table talk (``name_start_fuzzy``, ``table_talk_mention``, ``followup``)."""
        if self.kind in (RouteKind.name_start, RouteKind.name_end) and self.match is not None:
            return f"{self.kind.value}_{self.match.value}"
        if self.kind is RouteKind.table_talk:
            return "table_talk_mention" if self.mentioned is not None else "table_talk_cue"
        return self.kind.value


ROUTING_LABELS: tuple[str, ...] = (
    *(f"{k}_{m.value}" for k in ("name_start", "name_end") for m in NameMatch),
    "followup", "only_npc", "table_talk_mention", "table_talk_cue", "none",
)
"""Every value ``RoutingExplained.label`` takes."""


class FailureStage(StrEnum):
    stt = "stt"  # the line could not be transcribed
    llm = "llm"  # the reply's generation failed, timed out or was cancelled
    npc_brain = "npc-brain"  # npc-brain itself broke
    tts = "tts"


class TurnFailure(BaseModel):
    """Where a failed, timed-out or cancelled turn stopped and why (no secrets: the error is
    our own provider error's message, never a vendor's payload)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: FailureStage
    provider: str | None = Field(None, max_length=64, description=(
        "the provider that failed (`llm` when every provider of the chain did)"))
    error: str = Field("", max_length=300)
    retryable: bool | None = Field(None, description=(
        "whether the same call could succeed if tried again; absent when not known"))


class TurnEnded(Event):
    """Every utterance ends as exactly one turn with an outcome, answered or not."""

    type: Literal["turn"] = "turn"
    turn_id: Id
    speaker: Token
    transcript: str = Field(max_length=4000)
    npc: Token | None = None
    outcome: Outcome
    reason: str = Field("", max_length=500)
    reply_text: str = Field("", max_length=4000)
    latency: TurnLatency = TurnLatency()
    llm_provider: str | None = Field(
        None, max_length=64,
        description="the LLM provider that spoke the reply (a fallback when the NPC's own "
        "failed before speaking); absent when no LLM spoke")
    routing: RoutingExplained | None = Field(
        None, description="why the turn went to this NPC or to nobody (absent in old events)")
    failure: TurnFailure | None = Field(
        None, description="failed, timed out or cancelled: where and why")
    memories: tuple[Id, ...] = Field(
        (), max_length=20, description="the memories of earlier sessions recalled into the "
        "reply's prompt (ids in session-control's store, best first; docs/memory.md)")


class AudioDone(Event):
    """tts finished a turn's audio (published by tts after the last frame)."""

    type: Literal["audio.done"] = "audio.done"
    turn_id: Id
    npc: Token
    frames: int = Field(ge=0)
    first_audio_ns: Ns = 0
    cancelled: bool = False
    reason: str = Field("", max_length=200, description=(
        "why the turn ended: final, or why it was cancelled (flush: ..., stale: ..., "
        "session ended, ...)"))


ControlEvent = Annotated[
    SessionStarted | SessionStopped | Speaker | BargeIn | Flush | Played | NpcMute | NpcSpeak
    | NpcTaught | NpcForgot | TurnEnded | AudioDone,
    Field(discriminator="type"),
]

_CONTROL = TypeAdapter(ControlEvent)
_VAD = TypeAdapter(VadEvent)


# --- liveness (a JetStream KV value, not a subject) ---------------------------------------

SessionRef = Annotated[str, Field(pattern=rf"^{TOKEN_PATTERN}\.{TOKEN_PATTERN}$")]


class Heartbeat(Event):
    """What a stage replica or an edge puts under ``<role>.<replica>`` in the heartbeat
    bucket while it runs; the key expires when it stops putting (a crash) and is deleted
    on a graceful stop."""

    role: str = Field(pattern=r"^[a-z][a-z0-9-]{0,31}$", description="stage name or `edge`")
    replica: str = Field(min_length=1, max_length=200)
    sessions: list[SessionRef] = Field(max_length=10_000,
                                       description="sessions it serves, `<tenant>.<session>`")
    capacity: int = Field(ge=0, description="sessions it serves at most")
    at_ns: Ns = Field(description="when this heartbeat was put (unix ns)")
    started_ns: Ns = Field(description="when the replica started (unix ns)")


def control_subject_suffix(event: Event) -> str:
    """``ctl.<suffix>``: the control event's type is its subject tail."""
    return event.type


def _check_size(data: bytes) -> None:
    if len(data) > MAX_EVENT_BYTES:
        raise MalformedEvent(f"event of {len(data)} bytes exceeds the {MAX_EVENT_BYTES} byte limit")


def parse_control(data: bytes) -> Event:
    _check_size(data)
    try:
        return _CONTROL.validate_json(data, strict=True)
    except ValidationError as exc:
        raise MalformedEvent(_short(exc)) from None


def parse_vad(data: bytes) -> Event:
    _check_size(data)
    try:
        return _VAD.validate_json(data, strict=True)
    except ValidationError as exc:
        raise MalformedEvent(_short(exc)) from None


def parse_as(model: type[E], data: bytes) -> E:
    _check_size(data)
    try:
        return model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise MalformedEvent(_short(exc)) from None


def _short(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        UtteranceStarted, UtteranceEnded, Transcript, ReplyChunk, SessionStarted,
        SessionStopped, Speaker, BargeIn, Flush, Played, NpcMute, NpcSpeak, NpcTaught, NpcForgot,
        TurnEnded, AudioDone, Usage,
    )
}
