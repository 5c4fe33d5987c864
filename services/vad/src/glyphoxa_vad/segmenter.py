"""One speaker's utterance segmentation: the pure core of vad (no NATS, no wall clock).

Input is decoded 16 kHz mono PCM per ``audio.in`` frame with its capture time; output is
utterance start / audio chunks / end plus a barge-in signal. Everything is decided on
*capture* time and audio content, so replaying the same frames gives the same result.

Talk spurts. Like Discord, a speaker sends frames only while talking. A spurt is the
run of frames processed since the last reset; the VAD model state is reset (and the opus
decoder renewed by the caller) at the start of every spurt. A spurt ends when

- an open utterance ends (silence, capture gap, idle, max length), or
- no utterance is open and nothing was speech for ``min_silence_ms``.

So the output of a spurt depends on that spurt's frames only, and a replica that replays
the input from the first frame of every unfinished spurt publishes the same utterances.

Speech. A chunk whose probability reaches ``threshold`` starts a candidate; once the
candidate holds ``min_speech_ms`` of speech (pauses shorter than ``min_silence_ms`` do not
drop it) the utterance opens, ``preroll_ms`` before the candidate's first speech. Inside
an utterance speech continues down to ``neg_threshold``; ``min_silence_ms`` without speech
(filled capture gaps included) ends it, and so does ``max_utterance_ms``.

Pause (``pause_ms`` set). When the speaker's frames have stopped (Discord sends none in
silence) and ``pause_ms`` have passed since the last speech, the segmenter says so once per
silence: an ``UtterancePause`` with the audio not yet sent as a chunk. If the utterance then
ends with no further frame, its audio is exactly what had been sent by the pause (the
end's last chunk is that tail), so stt can transcribe it during the rest of the silence.
A pause never changes the chunks themselves (a replay, which may see no pause, publishes
the same chunks), and it says nothing when speech resumes: it is a hint, not an event.

End of turn (``turn_silence_ms`` set). Once an open utterance has been silent for
``turn_silence_ms`` the segmenter stops and asks: it returns a ``TurnCheck`` with the
utterance's last audio (up to 8 s, the silence included) and takes no more input until the
caller answers with ``turn_result`` (the model's probability that the turn is finished). At
or above ``turn_threshold`` the utterance ends there (reason ``turn``); below it the
segmenter waits on, asks again every ``turn_recheck_ms`` of further silence, and ends the
utterance at ``turn_max_silence_ms`` of silence whatever the model said. Speech resuming
drops the question. The answer is applied at the point of the timeline it was asked at, so
a replay that is answered by the same model gives the same utterances.

Utterance id = ``<speaker>-<Glx-Seq of the first frame in the utterance>`` (pre-roll
included). ``start_ns`` is the capture time of that first frame, i.e. of the first sample
of the published audio; ``speech_end_ns`` the capture time at the end of the last chunk
the engine classified as speech.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from glyphoxa_vad.engines import SAMPLE_RATE, VadStream

NS_PER_SAMPLE = 1_000_000_000 // SAMPLE_RATE  # 62 500 ns
_EMPTY = np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    min_speech_ms: int = 200
    min_silence_ms: int = 500
    preroll_ms: int = 200
    max_utterance_ms: int = 20_000
    bargein_ms: int = 600
    chunk_ms: int = 160
    jitter_ms: int = 10
    """Capture gaps shorter than this are timing jitter, not silence."""
    stall_ms: int = 60
    """The idle timer only fires once frames are this late (frames still flowing are judged
    by their content, which a replay reproduces exactly)."""
    pause_ms: int | None = None
    """Silence (frames stopped) after which an ``UtterancePause`` is emitted; None: never."""
    turn_silence_ms: int | None = None
    """Silence after which the end-of-turn model is asked; None: end on ``min_silence_ms``."""
    turn_max_silence_ms: int = 1_200
    """With the model: silence that ends an utterance whatever the model says."""
    turn_recheck_ms: int = 300
    """With the model: further silence after which an "unfinished" answer is asked again."""
    turn_threshold: float = 0.5
    """With the model: probability of "finished" that ends the utterance."""

    @property
    def end_silence_ms(self) -> int:
        """Silence that ends an open utterance without (or against) the model."""
        return self.min_silence_ms if self.turn_silence_ms is None else self.turn_max_silence_ms

    @property
    def neg_threshold(self) -> float:
        """Hysteresis: once speech started, it continues down to this probability."""
        return max(self.threshold - 0.15, self.threshold / 2)

    @staticmethod
    def samples(ms: int) -> int:
        return ms * SAMPLE_RATE // 1000


# --- outputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UtteranceStart:
    utterance_id: str
    speaker: str
    start_ns: int


@dataclass(frozen=True)
class UtteranceAudio:
    utterance_id: str
    speaker: str
    index: int
    pcm: bytes  # PCM16 mono 16 kHz


@dataclass(frozen=True)
class UtteranceEnd:
    utterance_id: str
    speaker: str
    start_ns: int
    speech_end_ns: int
    chunks: int
    audio_ms: int
    reason: str  # silence | gap | idle | max_length | stopped | turn


@dataclass(frozen=True)
class UtterancePause:
    """The speaker went quiet: the utterance's audio so far is its ``chunks`` chunks sent plus
    ``tail`` (the samples not yet sent, < one chunk), which the end sends as its last chunk
    if no further frame comes."""

    utterance_id: str
    speaker: str
    chunks: int
    tail: bytes  # PCM16 mono 16 kHz, possibly empty
    speech_end_ns: int


@dataclass(frozen=True, eq=False)
class TurnCheck:
    """A question to the end-of-turn model; answer it with ``turn_result(check, p)``."""

    utterance_id: str
    speaker: str
    number: int  # the utterance's n-th question
    silence_ms: int
    pcm: np.ndarray  # int16, 16 kHz: the utterance's last audio up to the question, <= 8 s


@dataclass(frozen=True)
class SpeechBargeIn:
    utterance_id: str
    speaker: str
    at_ns: int


Output = UtteranceStart | UtteranceAudio | UtteranceEnd | SpeechBargeIn | TurnCheck | UtterancePause

TURN_WINDOW = 8 * SAMPLE_RATE  # audio the end-of-turn model reads


# --- state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """A run of samples on the spurt's timeline: one decoded frame, or a filled gap."""

    start: int
    pcm: np.ndarray
    capture_ns: int
    seq: int | None  # None: silence filled in for a capture gap

    @property
    def end(self) -> int:
        return self.start + len(self.pcm)


@dataclass
class _Utterance:
    id: str
    start: int
    start_ns: int
    onset: int
    sent: int
    chunks: int = 0
    bargein_sent: bool = False
    checks: int = 0
    paused_at: int = -1  # timeline position of the last pause said


class SpeakerSegmenter:
    def __init__(self, speaker: str, config: SegmenterConfig, stream: VadStream):
        self.speaker, self.cfg, self._vad = speaker, config, stream
        self._chunk = stream.chunk_samples
        self._out_chunk = config.samples(config.chunk_ms)
        self._min_speech = config.samples(config.min_speech_ms)
        self._min_silence = config.samples(config.min_silence_ms)
        self._min_silence_ns = config.min_silence_ms * 1_000_000
        self._end_silence = config.samples(config.end_silence_ms)
        self._end_silence_ns = config.end_silence_ms * 1_000_000
        self._turn = config.turn_silence_ms is not None
        self._turn_first = config.samples(config.turn_silence_ms or 0)
        self._turn_recheck = config.samples(config.turn_recheck_ms)
        self._preroll = config.samples(config.preroll_ms)
        self._max_utt = config.samples(config.max_utterance_ms)
        self._bargein_after = config.samples(config.bargein_ms)
        self._pause_ns = config.pause_ms * 1_000_000 if config.pause_ms else None
        self.completed: list[tuple[int, int]] = []
        """(first, last) stream sequences of spurts that ended; the caller drains it."""
        self._clear()

    def _clear(self) -> None:
        self.spurt_first: int | None = None  # stream seq of the spurt's first frame
        self.spurt_last: int | None = None
        self._pieces: deque[_Piece] = deque()
        self._pos = 0  # samples on the spurt timeline
        self._classified = 0  # samples the engine has judged
        self._pending = _EMPTY
        self._candidate: int | None = None  # onset of speech not yet long enough
        self._voiced = 0  # speech in the candidate so far (short pauses do not count)
        self._voice_end = 0
        self._voice_end_ns = 0
        self._next_ns = 0  # capture time right after the last sample
        self._utt: _Utterance | None = None
        self._ending: str | None = None
        self._asking: TurnCheck | None = None  # waiting for its answer
        self._next_check = self._turn_first  # silence at which to ask next

    @property
    def _silence_limit_ns(self) -> int:
        """Silence that ends the spurt: an open utterance's end silence (the model's longest
        wait when it is on), else a candidate's ``min_silence_ms``."""
        return self._end_silence_ns if self._utt is not None else self._min_silence_ns

    @property
    def in_spurt(self) -> bool:
        return self.spurt_first is not None

    @property
    def utterance_id(self) -> str | None:
        return self._utt.id if self._utt else None

    # --- input -----------------------------------------------------------------------------

    def before_frame(self, capture_ns: int) -> list[Output]:
        """Account for the capture gap before the next frame: it is silence of that length."""
        if not self.in_spurt:
            return []
        if capture_ns - self._voice_end_ns >= self._silence_limit_ns:
            return self._finish("gap")
        gap_ns = capture_ns - self._next_ns
        if gap_ns < self.cfg.jitter_ms * 1_000_000:
            return []
        self._append(np.zeros(gap_ns // NS_PER_SAMPLE, dtype=np.int16), self._next_ns, None)
        return self._after_append()

    def push(self, pcm: np.ndarray, seq: int, capture_ns: int, stream_seq: int) -> list[Output]:
        """One decoded frame (call ``before_frame`` first)."""
        if not self.in_spurt:
            self.spurt_first = stream_seq
            self._voice_end_ns = self._next_ns = capture_ns
        self.spurt_last = stream_seq
        self._append(np.asarray(pcm, dtype=np.int16), capture_ns, seq)
        return self._after_append()

    def tick(self, now_ns: int) -> list[Output]:
        """The speaker sent nothing: end the spurt once ``now_ns`` (capture clock) says the
        silence since the last speech reached ``min_silence_ms``."""
        if (not self.in_spurt or self._asking is not None
                or now_ns - self._next_ns < self.cfg.stall_ms * 1_000_000):
            return []
        silence_ns = now_ns - self._voice_end_ns
        if silence_ns >= self._silence_limit_ns:
            return self._finish("idle")
        out: list[Output] = []
        utt = self._utt
        if (self._pause_ns is not None and utt is not None and silence_ns >= self._pause_ns
                and utt.paused_at != self._pos):
            utt.paused_at = self._pos
            out.append(UtterancePause(utt.id, self.speaker, utt.chunks,
                                      self._slice(utt.sent, self._pos).tobytes(),
                                      self._voice_end_ns))
        if self._turn and self._utt is not None and silence_ns >= self._next_check * NS_PER_SAMPLE:
            # the frames stopped (Discord sends none in silence): ask on what came, plus the
            # silence since then
            missing = min((now_ns - self._next_ns) // NS_PER_SAMPLE, TURN_WINDOW)
            out.append(self._ask(silence_ns // NS_PER_SAMPLE, np.zeros(missing, dtype=np.int16)))
        return out

    def turn_result(self, check: TurnCheck, probability: float) -> list[Output]:
        """The model's answer to ``check``: end the utterance now, or wait on. An answer to a
        question that no longer stands (speech resumed, the utterance ended) changes nothing."""
        if self._asking is not check:
            return []
        self._asking = None
        utt = self._utt
        assert utt is not None
        if probability >= self.cfg.turn_threshold:
            self._ending = "turn"
        else:
            self._next_check = self._samples_of(check.silence_ms) + self._turn_recheck
        return self._after_append()

    @property
    def asking(self) -> TurnCheck | None:
        return self._asking

    def finish(self, reason: str = "stopped") -> list[Output]:
        return self._finish(reason) if self.in_spurt else []

    # --- timeline --------------------------------------------------------------------------

    def _append(self, pcm: np.ndarray, capture_ns: int, seq: int | None) -> None:
        self._pieces.append(_Piece(self._pos, pcm, capture_ns, seq))
        self._pos += len(pcm)
        self._next_ns = capture_ns + len(pcm) * NS_PER_SAMPLE
        self._pending = np.concatenate((self._pending, pcm)) if len(self._pending) else pcm

    def _after_append(self) -> list[Output]:
        out: list[Output] = []
        asked = self._asking  # a question already out is not returned twice
        while len(self._pending) >= self._chunk and self._ending is None and self._asking is None:
            chunk, self._pending = self._pending[: self._chunk], self._pending[self._chunk:]
            start = self._classified
            self._classified += self._chunk
            out += self._judge(start, self._classified, self._vad.probability(chunk))
        utt = self._utt
        if utt is not None and self._ending is None and self._pos - utt.start >= self._max_utt:
            self._ending = "max_length"
        if self._ending is not None:
            return out + self._finish(self._ending)
        if utt is not None:
            out += self._emit_audio(final=False)
            if self._asking is not None and self._asking is not asked:
                out.append(self._asking)
        elif self._candidate is None and (self._classified - self._voice_end >= self._min_silence
                                          or self._pos >= self._max_utt):
            # silent for long enough (or a very long spurt of short blips) with no utterance:
            # a fresh spurt next, so the input a replay needs stays bounded
            self._reset()
            return out
        self._prune()
        return out

    def _capture_at(self, sample: int) -> int:
        for piece in reversed(self._pieces):
            if piece.start <= sample:
                return piece.capture_ns + (sample - piece.start) * NS_PER_SAMPLE
        raise AssertionError("sample before the kept timeline")

    def _slice(self, start: int, end: int) -> np.ndarray:
        parts = [p.pcm[max(start - p.start, 0): end - p.start]
                 for p in self._pieces if p.end > start and p.start < end]
        return np.concatenate(parts) if parts else _EMPTY

    def _prune(self) -> None:
        keep_from = min(self._classified, self._candidate if self._candidate is not None else self._pos)
        keep_from -= self._preroll
        if self._utt is not None:
            keep_from = min(keep_from, self._utt.sent)
            if self._turn:  # the end-of-turn model reads the utterance's last 8 s
                keep_from = min(keep_from, max(self._utt.start, self._classified - TURN_WINDOW))
        while len(self._pieces) > 1 and self._pieces[0].end <= keep_from:
            self._pieces.popleft()

    # --- decisions -------------------------------------------------------------------------

    def _judge(self, start: int, end: int, prob: float) -> list[Output]:
        if self._utt is None:
            if prob < self.cfg.threshold:
                if self._candidate is not None and end - self._voice_end >= self._min_silence:
                    self._candidate = None  # the same silence would have ended an utterance
                return []
            if self._candidate is None:
                self._candidate, self._voiced = start, 0
            self._voiced += end - start
            self._mark_voice(end)
            return self._open() if self._voiced >= self._min_speech else []
        if prob >= self.cfg.neg_threshold:
            self._mark_voice(end)
            return self._bargein()
        silence = end - self._voice_end
        if silence >= self._end_silence:
            self._ending = "silence"
        elif self._turn and silence >= self._next_check:
            self._ask(silence)  # returned by _after_append once the audio is out
        return []

    def _ask(self, silence: int, tail: np.ndarray = _EMPTY) -> TurnCheck:
        utt = self._utt
        assert utt is not None and self._asking is None
        utt.checks += 1
        pcm = self._slice(max(utt.start, self._classified - TURN_WINDOW), self._classified)
        if len(tail):
            pcm = np.concatenate((pcm, tail))[-TURN_WINDOW:]
        self._asking = TurnCheck(utt.id, self.speaker, utt.checks,
                                 silence * 1000 // SAMPLE_RATE, pcm)
        return self._asking

    @staticmethod
    def _samples_of(ms: int) -> int:
        return ms * SAMPLE_RATE // 1000

    def _mark_voice(self, end: int) -> None:
        self._voice_end = end
        self._voice_end_ns = self._capture_at(end)
        self._next_check = self._turn_first

    def _open(self) -> list[Output]:
        assert self._candidate is not None
        want = max(self._candidate - self._preroll, 0)
        real = [p for p in self._pieces if p.seq is not None]
        first = next((p for p in real if p.end > want), real[-1] if real else None)
        if first is None:  # only filled silence is left: not an utterance
            self._candidate = None
            return []
        self._utt = _Utterance(f"{self.speaker}-{first.seq}", first.start, first.capture_ns,
                               onset=self._candidate, sent=first.start)
        self._candidate = None
        return [UtteranceStart(self._utt.id, self.speaker, first.capture_ns), *self._bargein()]

    def _bargein(self) -> list[Output]:
        utt = self._utt
        if utt is None or utt.bargein_sent or self._voice_end - utt.onset < self._bargein_after:
            return []
        utt.bargein_sent = True
        return [SpeechBargeIn(utt.id, self.speaker, self._voice_end_ns)]

    def _emit_audio(self, final: bool) -> list[Output]:
        utt = self._utt
        assert utt is not None
        out: list[Output] = []
        while self._pos - utt.sent >= self._out_chunk or (final and self._pos > utt.sent):
            n = min(self._out_chunk, self._pos - utt.sent)
            pcm = self._slice(utt.sent, utt.sent + n)
            out.append(UtteranceAudio(utt.id, self.speaker, utt.chunks, pcm.tobytes()))
            utt.chunks += 1
            utt.sent += n
        return out

    def _finish(self, reason: str) -> list[Output]:
        out: list[Output] = []
        utt = self._utt
        if utt is not None:
            out += self._emit_audio(final=True)
            out.append(UtteranceEnd(
                utt.id, self.speaker, utt.start_ns, self._voice_end_ns, utt.chunks,
                (utt.sent - utt.start) * 1000 // SAMPLE_RATE, reason))
        self._reset()
        return out

    def _reset(self) -> None:
        if self.spurt_first is not None and self.spurt_last is not None:
            self.completed.append((self.spurt_first, self.spurt_last))
        self._vad.reset()
        self._clear()
