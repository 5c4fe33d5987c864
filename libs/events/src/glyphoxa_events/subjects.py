"""Subject layout: ``glx.<tenant>.<session>.<kind>...`` plus the claim subjects.

Claims live under ``glxwork.<stage>.<tenant>.<session>`` rather than ``glx.work...``:
JetStream refuses streams whose subjects overlap, and ``glx.work.>`` would overlap
``glx.*.*.audio.>`` for a tenant called "work" (docs/adr/0002-claim-subjects.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from glyphoxa_events.tokens import InvalidToken, validate_token

ROOT = "glx"
CLAIM_ROOT = "glxwork"
API_ROOT = "glxapi"
STAGES = ("vad", "stt", "npc-brain", "tts")
KINDS = ("audio", "vad", "stt", "reply", "ctl", "usage")


@dataclass(frozen=True, slots=True)
class SessionSubjects:
    """Every subject of one session."""

    tenant: str
    session: str

    def __post_init__(self) -> None:
        validate_token(self.tenant, "tenant")
        validate_token(self.session, "session")

    @property
    def prefix(self) -> str:
        return f"{ROOT}.{self.tenant}.{self.session}"

    def audio_in(self, speaker: str = "*") -> str:
        return f"{self.prefix}.audio.in.{_tok_or_wild(speaker, 'speaker')}"

    def audio_out(self, npc: str = "*") -> str:
        return f"{self.prefix}.audio.out.{_tok_or_wild(npc, 'npc')}"

    def vad(self, speaker: str = "*") -> str:
        return f"{self.prefix}.vad.{_tok_or_wild(speaker, 'speaker')}"

    def stt(self, speaker: str = "*") -> str:
        return f"{self.prefix}.stt.{_tok_or_wild(speaker, 'speaker')}"

    def reply(self, npc: str = "*") -> str:
        return f"{self.prefix}.reply.{_tok_or_wild(npc, 'npc')}"

    def usage(self, stage: str = "*") -> str:
        """Usage events (metered provider work) a stage publishes for the session."""
        return f"{self.prefix}.usage.{_tok_or_wild(stage, 'stage')}"

    def ctl(self, event: str = ">") -> str:
        return f"{self.prefix}.ctl.{event}"

    def all(self) -> str:
        return f"{self.prefix}.>"


def _tok_or_wild(value: str, kind: str) -> str:
    return value if value == "*" else validate_token(value, kind)


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    tenant: str
    session: str
    kind: str
    rest: tuple[str, ...]

    @property
    def leaf(self) -> str:
        """The speaker or NPC token at the end of a media/event subject."""
        return self.rest[-1] if self.rest else ""


def parse_subject(subject: str) -> ParsedSubject:
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != ROOT:
        raise InvalidToken(f"not a session subject: {subject[:120]!r}")
    tenant = validate_token(parts[1], "tenant")
    session = validate_token(parts[2], "session")
    kind = parts[3]
    if kind not in KINDS:
        raise InvalidToken(f"unknown subject kind {kind[:40]!r}")
    rest = tuple(parts[4:])
    if kind in ("audio", "vad", "stt", "reply", "usage") and rest:
        validate_token(rest[-1], "speaker/npc/stage")
    return ParsedSubject(tenant, session, kind, rest)


def claim_subject(stage: str, tenant: str, session: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return f"{CLAIM_ROOT}.{stage}.{validate_token(tenant, 'tenant')}.{validate_token(session, 'session')}"


def parse_claim_subject(subject: str) -> tuple[str, str, str]:
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != CLAIM_ROOT or parts[1] not in STAGES:
        raise InvalidToken(f"not a claim subject: {subject[:120]!r}")
    return parts[1], validate_token(parts[2], "tenant"), validate_token(parts[3], "session")


ANONYMOUS = "anonymous"  # the principal of a client that logged in as nobody (no NATS auth)


def api_subject(verb: str, principal: str | None = None) -> str:
    """Subjects of session-control's bus API: a request is published on
    ``glxapi.<verb>.<principal>``, the principal being the NATS user the requester logged in
    as; the server lets each user publish only under its own name (docs/adr/0006), so
    session-control knows who asks. ``*`` for session-control's subscription. Without a
    principal: a broadcast (``glxapi.edge.changed``)."""
    if principal is None:
        return f"{API_ROOT}.{verb}"
    return f"{API_ROOT}.{verb}.{principal if principal == '*' else validate_token(principal, 'principal')}"


def api_principal(subject: str) -> str:
    """The principal of a request's subject (its last token)."""
    return validate_token(subject.rsplit(".", 1)[-1], "principal")
