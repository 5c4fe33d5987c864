"""Routing measured on the shared speech corpus (labels of who each line addresses).

The lines are played in order as one session; the texts are taken as if perfectly
transcribed, and also as faster-whisper heard them (``stt_baseline.json``). Run with
``-s`` to see every decision. The corpus is development material: nothing here depends on
its exact texts, only on its labels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from glyphoxa_campaign import Campaign
from glyphoxa_npc_brain.routing import LastAddress, Router

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CORPUS = Path(os.environ.get("GLYPHOXA_CORPUS", ROOT.parent / "shared" / "corpus"))
SCENE = CORPUS / "scenes" / "forge_and_tavern" / "scene.json"
TRAILING_SILENCE_S = 0.7  # every corpus file ends with 0.7 s of silence
GAP_S = 1.0  # and another second is assumed between two lines

if not (CORPUS / "lines.jsonl").is_file():
    pytest.skip(f"speech corpus not found at {CORPUS}", allow_module_level=True)


@dataclass(frozen=True)
class Line:
    text: str
    speech_end_ns: int
    addressed: str | None


def _lines() -> list[dict]:
    return [
        json.loads(raw) for raw in (CORPUS / "lines.jsonl").read_text().splitlines() if raw.strip()
    ]


def _scene() -> dict:
    return json.loads(SCENE.read_text())


def _campaign() -> Campaign:
    names = {r["addressed"] for r in _lines() if r["addressed"]}
    if SCENE.is_file():
        names |= {t["addressed"] for t in _scene()["turns"] if t["addressed"]}
    return Campaign(name="corpus", npcs=[{"name": n, "persona": f"{n}."} for n in sorted(names)])


def _as_session(records: list[dict], texts: list[str]) -> list[Line]:
    """Corpus lines one after another on a shared capture timeline."""
    out, offset = [], 0.0
    for record, text in zip(records, texts, strict=True):
        end_s = offset + record["speech_end_s"]
        out.append(Line(text, int(end_s * 1e9), record["addressed"]))
        offset = end_s + TRAILING_SILENCE_S + GAP_S
    return out


def _accuracy(lines: list[Line], label: str) -> float:
    campaign = _campaign()
    router = Router(campaign)
    last: LastAddress | None = None
    right = 0
    print(f"\n--- {label}")
    for line in lines:
        decision = router.route(line.text, line.speech_end_ns, last)
        if decision.npc is not None:
            last = LastAddress(decision.npc, line.speech_end_ns)
        npc = campaign.npc(decision.npc) if decision.npc else None
        got = npc.name if npc else None
        right += got == line.addressed
        mark = "  " if got == line.addressed else "XX"
        want = line.addressed or "-"
        print(f"{mark} {decision.kind.value:10} {got or '-':13} want {want:13} {line.text}")
    accuracy = right / len(lines)
    print(f"{label}: {right}/{len(lines)} = {accuracy:.0%}")
    return accuracy


def test_corpus_lines_perfect_transcripts_route_perfectly() -> None:
    records = _lines()
    assert (
        _accuracy(_as_session(records, [r["text"] for r in records]), "lines, perfect text") == 1.0
    )


def test_corpus_scene_routes_perfectly() -> None:
    if not SCENE.is_file():
        pytest.skip("scene not in the corpus")
    turns = sorted(_scene()["turns"], key=lambda t: t["end_s"])  # transcripts arrive by speech end
    lines = [Line(t["text"], int(t["end_s"] * 1e9), t["addressed"]) for t in turns]
    assert _accuracy(lines, "scene forge_and_tavern") == 1.0


def _baseline(key: str | None) -> list[Line] | None:
    path = CORPUS / "stt_baseline.json"
    if not path.is_file():
        return None
    baseline = json.loads(path.read_text())
    files = (baseline[key] if key else baseline)["per_file"]
    hyp = {f["file"]: f["hyp"] for f in files}
    records = _lines()
    return _as_session(records, [hyp[r["file"]] for r in records])


def test_corpus_lines_as_whisper_heard_them_with_the_name_prompt() -> None:
    lines = _baseline("with_name_prompt")
    if lines is None:
        pytest.skip("no stt baseline")
    assert _accuracy(lines, "lines, tiny.en with NPC names in the prompt") >= 0.9


def test_corpus_lines_as_whisper_heard_them_without_a_prompt_is_reported() -> None:
    """Without the name prompt most names are unrecognisable ("Myola"): a floor only."""
    lines = _baseline(None)
    if lines is None:
        pytest.skip("no stt baseline")
    assert _accuracy(lines, "lines, tiny.en without prompt") >= 0.5
