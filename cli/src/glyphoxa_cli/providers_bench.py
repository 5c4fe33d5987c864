"""Per-stage latency of the local providers, each in-process on real inputs.

Inputs: the player lines of the example scene (and of ../shared/corpus when present),
cut from their tracks the way vad hands them to stt (from the first syllable). The
providers are built from each service's own settings, so what is measured is what the
services run.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from glyphoxa_audio.wav import read_wav, resample
from glyphoxa_campaign import load_campaign_file
from glyphoxa_cli.bench import percentile

ROOT = Path(__file__).resolve().parents[3]
SCENE = ROOT / "examples" / "scenes" / "smithy"
CAMPAIGN = ROOT / "examples" / "campaign.yaml"


def scene_lines(scene_dir: Path) -> list[tuple[str, np.ndarray]]:
    meta = json.loads((scene_dir / "scene.json").read_text())
    tracks = {p["name"]: read_wav(scene_dir / p["track"]) for p in meta["players"]}
    lines = []
    for turn in meta["turns"]:
        pcm, rate = tracks[turn["player"]]
        clip = pcm[int(turn["start_s"] * rate):int(turn["end_s"] * rate)]
        lines.append((turn["text"], resample(clip, rate, 16000)))
    return lines


def row(name: str, values: list[float], extra: str = "") -> str:
    return (f"  {name:<34} n={len(values):<3} p50 {percentile(values, 50):7.0f} ms   "
            f"p95 {percentile(values, 95):7.0f} ms {extra}")


async def bench_vad(lines: list[tuple[str, np.ndarray]]) -> None:
    from glyphoxa_vad.engines import build_engine

    stream = build_engine("silero").stream()
    audio = np.concatenate([a for _, a in lines])
    chunks = [audio[i:i + 512] for i in range(0, len(audio) - 512, 512)]
    t0 = time.perf_counter()
    for chunk in chunks:
        stream.probability(chunk)
    per_chunk = (time.perf_counter() - t0) / len(chunks) * 1000
    print(f"  vad silero (onnxruntime)            {per_chunk:.3f} ms per 32 ms chunk "
          f"(real-time factor {per_chunk / 32:.4f})")


async def bench_stt(lines: list[tuple[str, np.ndarray]], prompt: str) -> None:
    from glyphoxa_stt.config import Settings
    from glyphoxa_stt.providers import build_provider

    provider = build_provider(Settings())
    await provider.start()
    took, rtf = [], []
    for _, audio in lines:
        t0 = time.perf_counter()
        await provider.transcribe(audio, prompt=prompt)
        took.append((time.perf_counter() - t0) * 1000)
        rtf.append(took[-1] / 1000 / (len(audio) / 16000))
    print(row(f"stt {provider.name} (utterance -> final)", took,
              f"  real-time factor p50 {np.median(rtf):.2f}"))


async def bench_llm(lines: list[tuple[str, np.ndarray]]) -> None:
    from glyphoxa_npc_brain.config import Settings
    from glyphoxa_npc_brain.llm import build_llm
    from glyphoxa_npc_brain.llm.base import ChatMessage
    from glyphoxa_npc_brain.prompt import persona_prompt
    from glyphoxa_npc_brain.sentences import SentenceSplitter

    campaign = load_campaign_file(CAMPAIGN)
    llm = await build_llm(Settings())
    first_token, first_sentence = [], []
    for i, (text, _) in enumerate(lines):
        npc = campaign.npcs[i % len(campaign.npcs)]
        system = persona_prompt(npc, campaign)
        await llm.prime(system)  # the service primes personas at session start
        splitter = SentenceSplitter()
        t0 = time.perf_counter()
        got_token = got_sentence = None
        async for delta in llm.stream(system, [ChatMessage("user", text)], max_tokens=60,
                                      seed=i, cancel=asyncio.Event()):
            got_token = got_token or time.perf_counter()
            if splitter.feed(delta) and got_sentence is None:
                got_sentence = time.perf_counter()
        got_sentence = got_sentence or time.perf_counter()
        first_token.append((got_token - t0) * 1000 if got_token else float("nan"))
        first_sentence.append((got_sentence - t0) * 1000)
    print(row(f"llm {llm.name} first token", first_token))
    print(row(f"llm {llm.name} first sentence", first_sentence))


async def bench_tts() -> None:
    from glyphoxa_campaign.model import VoiceSpec
    from glyphoxa_tts.config import Settings
    from glyphoxa_tts.providers import ProviderSet

    sentences = ["Aye, I can mend that blade by sundown.", "Two ales and a room, coming right up!",
                 "The north gate closes at dusk, so hurry.", "Fifteen silver, and not a copper less."]
    providers = ProviderSet(Settings())
    for voice in (VoiceSpec(), VoiceSpec(provider="espeak")):
        provider = await providers.for_voice(voice)
        first, rtf = [], []
        for text in sentences * 2:
            t0 = time.perf_counter()
            got = None
            samples = 0
            async for chunk in provider.synthesize(text, voice):
                got = got or time.perf_counter()
                samples += len(chunk)
            total = time.perf_counter() - t0
            first.append((got - t0) * 1000)
            rtf.append(total / (samples / 48000))
        print(row(f"tts {provider.name} first audio (sentence)", first,
                  f"  real-time factor p50 {np.median(rtf):.3f}"))


def run_provider_bench() -> None:
    print("\n== local providers, in-process (sequential, nothing else running)")
    lines = scene_lines(SCENE)
    corpus = ROOT.parent / "shared" / "corpus" / "scenes" / "forge_and_tavern"
    if (corpus / "scene.json").exists():
        lines += scene_lines(corpus)
    prompt = "Tabletop RPG session. NPCs: " + ", ".join(load_campaign_file(CAMPAIGN).proper_nouns()) + "."

    async def main() -> None:
        await bench_vad(lines)
        await bench_stt(lines, prompt)
        await bench_llm(lines)
        await bench_tts()

    asyncio.run(main())
