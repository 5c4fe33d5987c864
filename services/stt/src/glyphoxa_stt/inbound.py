"""Adapter: a ``glx.T.S.vad.<speaker>`` message into a typed utterance event.

Everything that is not exactly what docs/contract.md promises raises ``MalformedEvent``:
the session goes on, the message is logged and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from glyphoxa_bus.session import InputMessage
from glyphoxa_events import headers as H
from glyphoxa_events.models import MalformedEvent, UtteranceEnded, UtteranceStarted, parse_as
from glyphoxa_events.subjects import SessionSubjects, parse_subject
from glyphoxa_events.tokens import InvalidToken

KIND_START, KIND_AUDIO, KIND_PAUSE, KIND_END = "start", "audio", "pause", "end"
SAMPLE_RATE = 16_000
MAX_CHUNK_INDEX = 1_000_000
_UTTERANCE_ID = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,127}\Z")


@dataclass(frozen=True)
class Start:
    event: UtteranceStarted
    stream_seq: int


@dataclass(frozen=True)
class Audio:
    utterance_id: str
    speaker: str
    index: int
    pcm: bytes
    stream_seq: int


@dataclass(frozen=True)
class Pause:
    """vad's hint that the speaker went quiet: the utterance so far is ``chunks`` chunks
    plus ``tail`` (docs/contract.md)."""

    utterance_id: str
    speaker: str
    chunks: int
    tail: bytes


@dataclass(frozen=True)
class End:
    event: UtteranceEnded
    stream_seq: int


VadInput = Start | Audio | Pause | End


def parse_vad_message(msg: InputMessage, subjects: SessionSubjects) -> VadInput:
    speaker = _speaker(msg.subject, subjects)
    kind = msg.headers.get(H.KIND, "")
    if kind == KIND_AUDIO:
        return _audio(msg, speaker)
    if kind == KIND_START:
        started = parse_as(UtteranceStarted, msg.data)
        _check_ids(msg, speaker, started.speaker, started.utterance_id)
        return Start(started, msg.stream_seq)
    if kind == KIND_PAUSE:
        return _pause(msg, speaker)
    if kind == KIND_END:
        ended = parse_as(UtteranceEnded, msg.data)
        _check_ids(msg, speaker, ended.speaker, ended.utterance_id)
        return End(ended, msg.stream_seq)
    raise MalformedEvent(f"unknown {H.KIND} {kind[:40]!r}")


def _speaker(subject: str, subjects: SessionSubjects) -> str:
    try:
        parsed = parse_subject(subject)
    except InvalidToken as exc:
        raise MalformedEvent(str(exc)) from None
    if (parsed.tenant, parsed.session) != (subjects.tenant, subjects.session):
        raise MalformedEvent(f"subject {subject[:120]!r} is not in this session")
    if parsed.kind != "vad" or len(parsed.rest) != 1:
        raise MalformedEvent(f"not a vad subject: {subject[:120]!r}")
    return parsed.leaf


def _check_ids(msg: InputMessage, speaker: str, event_speaker: str, utterance_id: str) -> None:
    if event_speaker != speaker:
        raise MalformedEvent(f"speaker {event_speaker!r} in a message on {speaker!r}'s subject")
    header = msg.headers.get(H.UTTERANCE)
    if header is not None and header != utterance_id:
        raise MalformedEvent(f"{H.UTTERANCE} {header[:130]!r} differs from the body's id")


def _audio(msg: InputMessage, speaker: str) -> Audio:
    utterance_id, seq = _pcm_message(msg, "audio")
    if not msg.data:
        raise MalformedEvent("empty audio chunk")
    return Audio(utterance_id, speaker, seq, msg.data, msg.stream_seq)


def _pause(msg: InputMessage, speaker: str) -> Pause:
    utterance_id, chunks = _pcm_message(msg, "pause")
    return Pause(utterance_id, speaker, chunks, msg.data)


def _pcm_message(msg: InputMessage, kind: str) -> tuple[str, int]:
    """The utterance id and ``Glx-Seq`` of an ``audio`` or ``pause`` message, checked."""
    utterance_id = msg.headers.get(H.UTTERANCE, "")
    if not _UTTERANCE_ID.match(utterance_id):
        raise MalformedEvent(f"{kind} without a valid {H.UTTERANCE}: {utterance_id[:130]!r}")
    seq = msg.headers.get(H.SEQ, "")
    if not seq.isdigit() or int(seq) > MAX_CHUNK_INDEX:
        raise MalformedEvent(f"{kind} with invalid {H.SEQ} {seq[:20]!r}")
    rate = msg.headers.get(H.SAMPLE_RATE)
    if rate is not None and rate != str(SAMPLE_RATE):
        raise MalformedEvent(f"{kind} at {rate[:12]!r} Hz; expected {SAMPLE_RATE}")
    if len(msg.data) % 2:
        raise MalformedEvent(f"{kind} of {len(msg.data)} bytes is not PCM16")
    return utterance_id, int(seq)
