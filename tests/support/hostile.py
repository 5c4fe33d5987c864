"""Malformed and hostile bus messages for one live session, made from a seeded random
generator (the fuzz test, tests/e2e/test_fuzz_e2e.py).

Every message names the reader that must reject it once JetStream stores it (``Hostile.reader``),
so the test can account for each one in the services' rejection counters. What is sent is
what a careless or hostile publisher could get wrong: wrong JSON types, missing and extra
fields, huge and tiny values, NUL characters, invalid UTF-8, empty and oversized bodies,
implausible ``Glx-Seq`` and ``Glx-Capture-Ns``, unknown speakers, NPCs and sessions, ids a
reader has seen already.

What is *not* sent: a message that is well-formed and plausible for the live session (a
believable frame of a player, a valid utterance, transcript, reply or control event). Such a
message is not malformed but forged, and only bus authorization can refuse it (ARCHITECTURE.md,
"Security on the bus"). So every JSON body built from a template is checked against the
parser of its reader and drawn again until that parser refuses it (``badjson.refused``); the values
that must be refused whatever that parser says (non-finite numbers) are sent as they are.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    Flush,
    NpcMute,
    NpcSpeak,
    Played,
    ReplyChunk,
    SessionStopped,
    Speaker,
    Transcript,
    TurnEnded,
    Usage,
    UtteranceEnded,
    UtteranceStarted,
    parse_as,
    parse_control,
)
from glyphoxa_events.subjects import STAGES, SessionSubjects
from tests.support.badjson import refused

FRAME_NS = 20_000_000
MAX_NS = 2**63 - 1
DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9

# Who reads a stored message and must reject it (or why nobody does).
VAD, STT, BRAIN, TTS = "vad", "stt", "npc-brain", "tts"
CONTROL = "control"
"""Every stage's control subscription of the session (and the recorder on ctl.turn/played)."""
RECORDER = "recorder"
"""session-control's recorder (``ctl.turn``, ``ctl.played``, ``usage.>`` of any session)."""
TOLERATED = "tolerated"
"""Read and dropped by design, without a rejection: the repeated tail of an utterance or turn
the reader has finished (what a redelivery after a failover looks like)."""
NOBODY = "nobody"
"""Stored, but no consumer's filter takes it (one subject token too many)."""


def claim_reader(stage: str) -> str:
    return f"claim:{stage}"


@dataclass(frozen=True)
class Hostile:
    subject: str
    data: bytes
    headers: dict[str, str]
    reader: str
    category: str


@dataclass
class RealEvents:
    """What the live session has really published so far (copies of it are sent again)."""

    utterances: Mapping[str, UtteranceStarted]
    ended: Mapping[str, UtteranceEnded]
    finals: Mapping[str, Transcript]


BAD_TOKENS = ["Robin", "robin!", "ro\u0000bin", "ü", "-x", "_x", "a" * 65, "ROBIN", "r\u00f6bin",
              "x" * 300, "robin#1", "r'bin"]
"""Speaker/NPC/tenant tokens that are not ``[a-z0-9][a-z0-9_-]{0,63}`` (and are still a
single subject token: no dots, spaces or wildcards)."""


# --- the generator --------------------------------------------------------------------------


@dataclass
class HostileMessages:
    """Draws hostile messages for one session; ``seed`` makes the draw repeatable."""

    tenant: str
    session: str
    speakers: tuple[str, ...]
    npcs: tuple[str, ...]
    seed: int = 13
    rng: random.Random = field(init=False)
    subjects: SessionSubjects = field(init=False)
    _count: int = field(default=0, init=False)
    _recent: deque[Hostile] = field(default_factory=lambda: deque(maxlen=2000), init=False)
    _behind: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.subjects = SessionSubjects(self.tenant, self.session)
        start = time.time_ns() - DAY_NS
        self._behind = {s: start for s in self.speakers}
        self._kinds: list[tuple[int, Callable[[RealEvents], Hostile | None]]] = [
            (44, self._audio_in), (15, self._vad), (10, self._stt), (10, self._reply),
            (9, self._control), (7, self._recorder), (2, self._claim), (1, self._not_utf8),
            (3, self._again),
        ]

    def batch(self, n: int, real: RealEvents) -> list[Hostile]:
        out: list[Hostile] = []
        makers, weights = zip(*((m, w) for w, m in self._kinds), strict=True)
        while len(out) < n:
            made = self.rng.choices(makers, weights)[0](real)
            if made is not None:
                out.append(made)
        return out

    def _id(self) -> str:
        self._count += 1
        return f"fz:{self.tenant}.{self.session}:{self._count}"

    def _msg(self, subject: str, data: bytes, headers: dict[str, str], reader: str,
             category: str, msg_id: str | None = None) -> Hostile:
        made = Hostile(subject, data, {**headers, H.MSG_ID: msg_id or self._id()}, reader, category)
        if msg_id is None:
            self._recent.append(made)
        return made

    def _speaker(self, known: float = 0.6) -> str:
        if self.rng.random() < known:
            return self.rng.choice(self.speakers)
        return self.rng.choice(["mallory", "eve", f"x{self.rng.randrange(10**6)}", "gm", "bruno"])

    # --- audio.in: vad ---------------------------------------------------------------------

    def _audio_in(self, real: RealEvents) -> Hostile | None:
        rng, now = self.rng, time.time_ns()
        kind = rng.randrange(9)
        speaker = self._speaker()
        packet = rng.randbytes(rng.randrange(1, 200))
        codec = {H.CODEC: H.CODEC_OPUS}
        if kind == 0:  # Glx-Seq missing, not an integer, or out of range (Glx-Capture-Ns may be too)
            seq = rng.choice([None, "", "abc", "-1", "1.5", "1e9", "12\u0000", str(2**63), str(10**30),
                              "0x10", "\u0000", "9" * 400])
            cap = rng.choice([None, str(now), "-5", "now", str(2**64), "1.0e18"])
            headers = {k: v for k, v in ((H.SEQ, seq), (H.CAPTURE_NS, cap)) if v is not None}
            return self._msg(self.subjects.audio_in(speaker), packet, {**headers, **codec}, VAD, "bad_header")
        seq, cap = rng.randrange(2**40), rng.randrange(MAX_NS)
        ints = {H.SEQ: str(seq), H.CAPTURE_NS: str(cap)}
        if kind == 1:  # not opus
            codec = {H.CODEC: rng.choice(["pcm16", "", "OPUS", "opus\u0000", "mp3", "o" * 100])}
            return self._msg(self.subjects.audio_in(speaker), packet, {**ints, **codec}, VAD, "bad_codec")
        if kind == 2:  # a speaker token that may not be on a subject
            bad = rng.choice(BAD_TOKENS)
            return self._msg(f"{self.subjects.prefix}.audio.in.{bad}", packet, {**ints, **codec}, VAD,
                             "bad_token")
        if kind == 3:  # an empty or oversized opus packet
            packet = rng.choice([b"", bytes(3826), rng.randbytes(4000)])
            if rng.random() < 0.001:  # beyond the stream's largest message: JetStream refuses it
                packet = bytes(300_000)
            return self._msg(self.subjects.audio_in(speaker), packet, {**ints, **codec}, VAD, "bad_packet")
        if kind == 4:  # Glx-Seq ahead of its capture time (2**62, or anything above)
            cap = rng.choice([now, rng.randrange(MAX_NS), 0])
            seq = rng.choice([2**62, MAX_NS, rng.randrange(cap // FRAME_NS + 51, MAX_NS)])
            return self._msg(self.subjects.audio_in(speaker), packet,
                             {H.SEQ: str(seq), H.CAPTURE_NS: str(cap), **codec}, VAD, "seq_ahead")
        if kind == 5:  # a capture time an hour to centuries ahead, numbered below the speaker
            cap = rng.randrange(now + HOUR_NS, MAX_NS)
            seq = rng.randrange(10**6)
            return self._msg(self.subjects.audio_in(speaker), packet,
                             {H.SEQ: str(seq), H.CAPTURE_NS: str(cap), **codec}, VAD, "capture_ahead")
        if kind == 6 and rng.random() < 0.1:  # a token too many: in the stream, read by nobody
            return self._msg(f"{self.subjects.audio_in(speaker)}.{rng.choice(['x', 'in', 'robin'])}",
                             packet, {**ints, **codec}, NOBODY, "deep_subject")
        if kind in (6, 7):
            return self._out_of_order(packet, codec)
        return self._real_frame_again(real) or self._out_of_order(packet, codec)

    def _out_of_order(self, packet: bytes, codec: dict[str, str]) -> Hostile:
        """A frame of a player numbered below what the player has sent, its capture time a
        day and more back. Each such frame is more than 1 s before the last one sent of the
        speaker, so no three of them ever look like the speaker's restarted stream (a run
        vad takes up: a forged run of plausible frames is bus authorization's)."""
        speaker = self.rng.choice(self.speakers)
        self._behind[speaker] -= self.rng.randrange(2 * 10**9, 600 * 10**9)
        seq = self.rng.randrange(10**6)
        return self._msg(self.subjects.audio_in(speaker), packet,
                         {H.SEQ: str(seq), H.CAPTURE_NS: str(self._behind[speaker]), **codec},
                         VAD, "out_of_order")

    def _real_frame_again(self, real: RealEvents) -> Hostile | None:
        """The id of a frame a player really sent (the first of an utterance): JetStream drops
        it as a duplicate. Should the duplicate window have passed, its header is bad."""
        if not real.utterances:
            return None
        utterance = self.rng.choice(sorted(real.utterances))
        speaker, _, seq = utterance.rpartition("-")
        msg_id = f"ain:{self.tenant}.{self.session}:{speaker}:{seq}"
        return self._msg(self.subjects.audio_in(speaker), b"\xfc\xff\xfe", {H.SEQ: "forged", H.CODEC: "opus"},
                         VAD, "real_frame_id", msg_id=msg_id)

    # --- vad.<speaker>: stt ----------------------------------------------------------------

    def _vad(self, real: RealEvents) -> Hostile | None:
        rng = self.rng
        speaker = self._speaker()
        subject = self.subjects.vad(speaker)
        kind = rng.randrange(10)
        if kind == 0:  # no, or an unknown, Glx-Kind
            headers = rng.choice([{}, {H.KIND: ""}, {H.KIND: "START"}, {H.KIND: "stop"}, {H.KIND: "end\u0000"}])
            return self._msg(subject, _rand_bytes(rng), headers, STT, "vad_kind")
        if kind in (1, 2, 3):  # audio with a bad id, index, rate or body
            utt = f"fz-{rng.randrange(10**9)}"
            headers = {H.KIND: "audio", H.UTTERANCE: utt, H.SEQ: str(rng.randrange(100))}
            body = bytes(2 * rng.randrange(1, 800))
            spoil = rng.randrange(5)
            if spoil == 0:
                headers[H.UTTERANCE] = rng.choice(["", "UTT", "-x", "a" * 129, "u\u0000", "é"])
            elif spoil == 1:
                headers[H.SEQ] = rng.choice(["", "-1", "1.5", str(10**7), "x", "\u0000"])
            elif spoil == 2:
                headers[H.SAMPLE_RATE] = rng.choice(["8000", "", "16000.0", "48000"])
            else:
                body = rng.choice([b"", b"\x00", bytes(801)])
            return self._msg(subject, body, headers, STT, "vad_audio")
        if kind == 4:  # well-formed audio of an utterance nobody started
            utt = f"fz-{rng.randrange(10**9)}"
            return self._msg(subject, bytes(2 * rng.randrange(1, 800)),
                             {H.KIND: "audio", H.UTTERANCE: utt, H.SEQ: str(rng.randrange(100))},
                             STT, "unknown_utterance")
        if kind in (5, 6, 7):  # a malformed start or end (refused by the scene player too)
            return self._vad_event(speaker, subject)
        if kind == 8 and rng.random() < 0.5:  # a subject token that may not be
            return self._msg(f"{self.subjects.prefix}.vad.{rng.choice(BAD_TOKENS)}", _rand_bytes(rng),
                             {H.KIND: rng.choice(["start", "audio", "end"])}, STT, "bad_token")
        return self._vad_again(real)

    def _vad_event(self, speaker: str, subject: str) -> Hostile:
        rng = self.rng
        start = rng.random() < 0.5
        utt = f"fz-{rng.randrange(10**9)}"
        template = {"type": "utterance.started", "utterance_id": utt, "speaker": speaker,
                    "start_ns": time.time_ns()}
        if not start:
            template.update(type="utterance.ended", speech_end_ns=time.time_ns(), chunks=3,
                            audio_ms=60, vad_end_ns=time.time_ns())
        model = UtteranceStarted if start else UtteranceEnded
        body = refused(self.rng, template, lambda d: parse_as(model, d), model)
        headers = {H.KIND: "start" if start else "end", H.UTTERANCE: utt}
        return self._msg(subject, body, headers, STT, "vad_event")

    def _vad_again(self, real: RealEvents) -> Hostile | None:
        """A real start (stt refuses a second start of an utterance) or end (stt drops the
        tail of an utterance it finished) under a new message id."""
        if self.rng.random() < 0.5 and real.utterances:
            started = real.utterances[self.rng.choice(sorted(real.utterances))]
            return self._msg(self.subjects.vad(started.speaker), started.to_bytes(),
                             {H.KIND: "start", H.UTTERANCE: started.utterance_id}, STT, "start_again")
        if real.ended:
            ended = real.ended[self.rng.choice(sorted(real.ended))]
            return self._msg(self.subjects.vad(ended.speaker), ended.to_bytes(),
                             {H.KIND: "end", H.UTTERANCE: ended.utterance_id}, TOLERATED, "end_again")
        return None

    # --- stt.<speaker>: npc-brain ----------------------------------------------------------

    def _stt(self, real: RealEvents) -> Hostile | None:
        rng = self.rng
        kind = rng.randrange(6)
        speaker = self._speaker()
        template = {"utterance_id": f"fz-{rng.randrange(10**9)}", "speaker": speaker,
                    "text": "Bruno, fix my sword", "final": True, "start_ns": time.time_ns(),
                    "speech_end_ns": time.time_ns()}
        if kind <= 2:  # a malformed transcript (refused by the scene player too)
            body = refused(self.rng, template, lambda d: parse_as(Transcript, d), Transcript)
            return self._msg(self.subjects.stt(speaker), body, {}, BRAIN, "transcript")
        if kind == 3:  # a partial of another speaker than the subject's
            other = rng.choice([s for s in ("mallory", *self.speakers) if s != speaker])
            body = json.dumps({**template, "speaker": other, "final": False}).encode()
            return self._msg(self.subjects.stt(speaker), body, {}, BRAIN, "speaker_mismatch")
        if kind == 4:  # a subject token that may not be
            body = refused(self.rng, template, lambda d: parse_as(Transcript, d), Transcript)
            return self._msg(f"{self.subjects.prefix}.stt.{rng.choice(BAD_TOKENS)}", body, {}, BRAIN,
                             "bad_token")
        if not real.finals:  # a real final again, under a new id: the brain has ended that turn
            return None
        final = real.finals[rng.choice(sorted(real.finals))]
        return self._msg(self.subjects.stt(final.speaker), final.to_bytes(), {}, TOLERATED, "final_again")

    # --- reply.<npc>: tts ------------------------------------------------------------------

    def _reply(self, real: RealEvents) -> Hostile:
        rng = self.rng
        kind = rng.randrange(4)
        npc = rng.choice(self.npcs)
        template = {"turn_id": f"fz-{rng.randrange(10**9)}", "npc": npc, "index": 0,
                    "text": "Aye, by morning.", "final": True, "published_ns": time.time_ns()}
        if kind == 0:  # an NPC the campaign does not have
            stranger = rng.choice(["mallory", "nobody", f"npc-{rng.randrange(10**6)}"])
            body = json.dumps({**template, "npc": stranger,
                               "hold": rng.random() < 0.3}).encode()
            return self._msg(self.subjects.reply(stranger), body, {}, TTS, "unknown_npc")
        if kind == 1:  # another NPC than the subject's
            other = rng.choice([n for n in self.npcs if n != npc])
            body = json.dumps({**template, "npc": other}).encode()
            return self._msg(self.subjects.reply(npc), body, {}, TTS, "npc_mismatch")
        if kind == 2:  # a subject token that may not be
            return self._msg(f"{self.subjects.prefix}.reply.{rng.choice(BAD_TOKENS)}",
                             json.dumps(template).encode(), {}, TTS, "bad_token")
        body = refused(self.rng, template, lambda d: parse_as(ReplyChunk, d))
        return self._msg(self.subjects.reply(npc), body, {H.TURN: template["turn_id"]}, TTS, "reply_chunk")

    # --- ctl.*: every stage (and the recorder for turn/played) -----------------------------

    def _control(self, real: RealEvents) -> Hostile:
        rng = self.rng
        template = json.loads(rng.choice(self._control_templates())().model_dump_json())
        body = refused(self.rng, template, parse_control)
        tail = rng.choice([template["type"], template["type"], "turn", "played", "x", "flush.now",
                           "Turn", "a.b.c"])
        return self._msg(self.subjects.ctl(tail), body, {}, CONTROL, "control")

    def _control_templates(self) -> list[Callable[[], BaseModel]]:
        rng, now = self.rng, time.time_ns()
        turn = f"fz-{rng.randrange(10**9)}"
        npc, speaker = rng.choice(self.npcs), rng.choice(self.speakers)
        return [
            lambda: SessionStopped(reason="fuzz", stopped_ns=now),
            lambda: Speaker(speaker=speaker, display_name="Robin"),
            lambda: BargeIn(speaker=speaker, at_ns=now),
            lambda: Flush(turn_id=turn, npc=npc, reason="fuzz"),
            lambda: Played(turn_id=turn, npc=npc, text_heard="Aye.", complete=True),
            lambda: NpcMute(npc=npc, muted=True),
            lambda: NpcSpeak(npc=npc, text="Hello.", request_id=turn),
            lambda: TurnEnded(turn_id=turn, speaker=speaker, transcript="Bruno?", npc=npc,
                              outcome="answered"),
            lambda: AudioDone(turn_id=turn, npc=npc, frames=10),
        ]

    # --- usage and other sessions' turns: session-control's recorder ------------------------

    def _recorder(self, real: RealEvents) -> Hostile:
        rng = self.rng
        usage = {"type": "usage", "key": f"fz:{rng.randrange(10**9)}", "metric": "llm_tokens_in",
                 "amount": 12.0, "provider": "fake", "stage": "npc-brain"}
        kind = rng.randrange(5)
        if kind == 0:  # malformed usage of the live session
            body = refused(self.rng, usage, lambda d: parse_as(Usage, d))
            return self._msg(self.subjects.usage(rng.choice(STAGES)), body, {}, RECORDER, "usage")
        if kind == 1:  # an amount that is not a number of anything
            amount = rng.choice(["Infinity", "-Infinity", "NaN", "1e400", "-1e400"])
            body = json.dumps(usage)[:-1] + f', "amount": {amount}}}'
            body = body.replace('"amount": 12.0, ', "")
            return self._msg(self.subjects.usage("npc-brain"), body.encode(), {}, RECORDER, "usage_infinite")
        other = f"{self.subjects.prefix}-gone" if rng.random() < 0.5 else f"glx.nosuch.s{rng.randrange(99)}"
        if kind == 2:  # well-formed usage of a session this deployment does not know
            return self._msg(f"{other}.usage.stt", json.dumps(usage).encode(), {}, RECORDER, "other_session")
        if kind == 3:  # a turn of another (unknown, or not a token) session: NUL, huge numbers
            where = rng.choice([other, f"glx.{rng.choice(BAD_TOKENS)}.s1"])
            turn = {"type": "turn", "turn_id": "fz-1", "speaker": "robin",
                    "transcript": rng.choice(["a\u0000b", "ok", "x" * 3000]), "outcome": "answered",
                    "latency": {"speech_end_ns": rng.choice([0, 2**63, 2**70])}}
            return self._msg(f"{where}.ctl.turn", json.dumps(turn).encode(), {}, RECORDER, "other_turn")
        played = {"type": "played", "turn_id": "fz-2", "npc": "bruno", "text_heard": "\u0000",
                  "complete": True, "first_played_ns": rng.choice([0, 2**63 + 1])}
        return self._msg(f"{other}.ctl.played", json.dumps(played).encode(), {}, RECORDER, "other_played")

    # --- claims: each stage's claim worker ---------------------------------------------------

    def _claim(self, real: RealEvents) -> Hostile:
        rng = self.rng
        stage = rng.choice(STAGES)
        tail = rng.choice([f"{rng.choice(BAD_TOKENS)}.{self.session}", self.tenant,
                           f"{self.tenant}.{self.session}.x", f"{self.tenant}.{rng.choice(BAD_TOKENS)}"])
        return self._msg(f"glxwork.{stage}.{tail}", _rand_bytes(rng), {}, claim_reader(stage), "claim")

    # --- subjects that are not UTF-8 (``not_utf8``: only a bare connection sends them) -------

    def _not_utf8(self, real: RealEvents) -> Hostile:
        rng, prefix = self.rng, self.subjects.prefix
        bad = rng.choice([b"\xff", b"\xfe\xff", b"ro\xc3bin", b"\xed\xa0\x80", b"\xc0\xaf"]).decode(
            "utf-8", "surrogateescape")
        stage = rng.choice(STAGES)
        subject, reader = rng.choice([
            (f"{prefix}.audio.in.{bad}", VAD), (f"{prefix}.vad.{bad}", STT),
            (f"{prefix}.stt.{bad}", BRAIN), (f"{prefix}.reply.{bad}", TTS),
            (f"{prefix}.ctl.{bad}", CONTROL), (f"glx.{bad}.s1.ctl.turn", RECORDER),
            (f"{prefix}.usage.{bad}", RECORDER), (f"glxwork.{stage}.{bad}.s1", claim_reader(stage)),
        ])
        headers = {H.SEQ: "1", H.CAPTURE_NS: str(time.time_ns()), H.KIND: "start"}
        return self._msg(subject, _rand_bytes(rng), headers, reader, "not_utf8")

    # --- one already sent, again under its id: a JetStream duplicate ------------------------

    def _again(self, real: RealEvents) -> Hostile | None:
        if not self._recent:
            return None
        sent = self.rng.choice(self._recent)
        return Hostile(sent.subject, sent.data, sent.headers, sent.reader, f"{sent.category}+again")


def _rand_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(0, 300))

