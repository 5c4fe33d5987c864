"""Speaker tracks rebuilt from a session's recorded ``audio.in`` frames.

What an edge published for a speaker is a sparse run of 20 ms opus frames numbered by
``Glx-Seq`` and stamped with ``Glx-Capture-Ns`` (docs/contract.md): frames only while the
player makes sound, then a few silence frames, then nothing until they speak again. From
the stream they may come back out of order (a resend after a broker outage), twice (a
resend the duplicate window let through), with holes (lost on the way), and a speaker may
join long after the session began. This rebuilds one 48 kHz mono PCM track per speaker on
one timeline (sample 0 = ``origin_ns``):

- duplicates (same ``Glx-Seq``): the first one kept;
- order: by ``Glx-Seq``, which follows capture time;
- a frame right after its predecessor (``seq + 1``) follows it without a gap;
- a hole of at most ``MAX_CONCEALED`` frames is lost packets: opus packet-loss concealment
  fills it, as a player's client would have;
- a longer hole is the player being quiet: silence, and the next frame is placed at its own
  capture time;
- a corrupt packet is concealed too; a frame captured before ``origin_ns`` is dropped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from glyphoxa_audio.opus import OpusDecoder, OpusError

RATE = 48_000
FRAME = 960  # samples of a 20 ms frame at 48 kHz
FRAME_NS = 20_000_000
MAX_CONCEALED = 5  # frames (100 ms): a longer hole is a pause, not loss


@dataclass(frozen=True)
class RecordedFrame:
    """One ``audio.in`` message as it was stored."""

    speaker: str
    seq: int
    capture_ns: int
    packet: bytes


@dataclass
class TrackReport:
    """What rebuilding one speaker's track found."""

    frames: int = 0
    duplicates: int = 0
    reordered: int = 0
    concealed: int = 0  # lost or corrupt frames filled by packet-loss concealment
    pauses: int = 0  # holes filled with silence
    before_origin: int = 0
    first_capture_ns: int | None = None


@dataclass
class Tracks:
    origin_ns: int
    pcm: dict[str, np.ndarray] = field(default_factory=dict)  # speaker -> int16 mono
    reports: dict[str, TrackReport] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return max((len(t) for t in self.pcm.values()), default=0) / RATE


def rebuild(frames: list[RecordedFrame], origin_ns: int | None = None) -> Tracks:
    """Every speaker's track on one timeline, all padded to the same length."""
    if origin_ns is None:
        origin_ns = min((f.capture_ns for f in frames), default=0)
    by_speaker: dict[str, list[RecordedFrame]] = defaultdict(list)
    for frame in frames:
        by_speaker[frame.speaker].append(frame)
    tracks = Tracks(origin_ns)
    for speaker, own in sorted(by_speaker.items()):
        tracks.pcm[speaker], tracks.reports[speaker] = _speaker_track(own, origin_ns)
    length = max((len(t) for t in tracks.pcm.values()), default=0)
    for speaker, pcm in tracks.pcm.items():
        tracks.pcm[speaker] = np.pad(pcm, (0, length - len(pcm)))
    return tracks


def _ordered(frames: list[RecordedFrame], report: TrackReport) -> list[RecordedFrame]:
    seen: dict[int, RecordedFrame] = {}
    last_seq = None
    for frame in frames:  # in stored order
        if frame.seq in seen:
            report.duplicates += 1
            continue
        if last_seq is not None and frame.seq < last_seq:
            report.reordered += 1
        last_seq = frame.seq if last_seq is None else max(last_seq, frame.seq)
        seen[frame.seq] = frame
    return [seen[seq] for seq in sorted(seen)]


def _speaker_track(frames: list[RecordedFrame], origin_ns: int) -> tuple[np.ndarray, TrackReport]:
    report = TrackReport()
    decoder = OpusDecoder(RATE, 1)
    pieces: list[tuple[int, np.ndarray]] = []  # (sample offset, pcm)
    cursor = 0  # where the next sample would go
    prev_seq: int | None = None
    for frame in _ordered(frames, report):
        if frame.capture_ns < origin_ns:
            report.before_origin += 1
            continue
        report.frames += 1
        if report.first_capture_ns is None:
            report.first_capture_ns = frame.capture_ns
        missing = 0 if prev_seq is None else frame.seq - prev_seq - 1
        if prev_seq is None or missing > MAX_CONCEALED:
            if prev_seq is not None:
                report.pauses += 1
            cursor = max(cursor, round((frame.capture_ns - origin_ns) * RATE / 1e9))
        else:
            for _ in range(missing):
                pieces.append((cursor, decoder.conceal()))
                cursor += FRAME
                report.concealed += 1
        pcm = _decode(decoder, frame.packet, report)
        pieces.append((cursor, pcm))
        cursor += len(pcm)
        prev_seq = frame.seq
    track = np.zeros(cursor, np.int16)
    for offset, pcm in pieces:
        track[offset:offset + len(pcm)] = pcm
    return track, report


def _decode(decoder: OpusDecoder, packet: bytes, report: TrackReport) -> np.ndarray:
    try:
        return decoder.decode(packet)
    except OpusError:
        report.concealed += 1
        return decoder.conceal()
