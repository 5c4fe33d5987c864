"""Preparing the default GGUF from its part packages: join, verify, never a broken file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from glyphoxa_npc_brain import models
from glyphoxa_npc_brain.models import ModelError, ensure_default_model, is_verified, join_parts

pytestmark = pytest.mark.unit


def make_parts(tmp_path: Path, sizes=(1000, 2500, 7)) -> tuple[list[Path], bytes]:
    parts, blob = [], b""
    for n, size in enumerate(sizes, start=1):
        data = bytes((n * 7 + i) % 251 for i in range(size))
        part = tmp_path / "parts" / f"part{n:02d}.bin"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(data)
        parts.append(part)
        blob += data
    return parts, blob


def test_parts_are_joined_in_order_and_verified(tmp_path: Path) -> None:
    parts, blob = make_parts(tmp_path)
    seen: list[tuple[int, int]] = []
    target = tmp_path / "home" / "models" / "m.gguf"
    out = join_parts(
        parts,
        target,
        hashlib.sha256(blob).hexdigest(),
        len(blob),
        lambda done, total: seen.append((done, total)),
    )
    assert out == target and target.read_bytes() == blob
    assert seen[-1] == (len(blob), len(blob)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf", "m.gguf.verified"]


def test_a_wrong_hash_is_a_clear_error_and_leaves_no_file(tmp_path: Path) -> None:
    parts, blob = make_parts(tmp_path)
    target = tmp_path / "models" / "m.gguf"
    with pytest.raises(ModelError, match="sha256 .* expected 0{64}"):
        join_parts(parts, target, "0" * 64, len(blob))
    assert list(target.parent.iterdir()) == []  # no half-written or temporary file


def test_a_wrong_total_size_or_missing_part_is_refused_before_writing(tmp_path: Path) -> None:
    parts, blob = make_parts(tmp_path)
    target = tmp_path / "models" / "m.gguf"
    digest = hashlib.sha256(blob).hexdigest()
    with pytest.raises(ModelError, match="expected 10"):
        join_parts(parts, target, digest, 10)
    with pytest.raises(ModelError, match="missing"):
        join_parts([*parts, tmp_path / "nope.bin"], target, digest, len(blob))
    assert not target.exists()


def test_a_verified_file_is_trusted_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    parts, blob = make_parts(tmp_path)
    digest = hashlib.sha256(blob).hexdigest()
    target = join_parts(parts, tmp_path / "m.gguf", digest, len(blob))
    monkeypatch.setattr(models, "_hash_file", lambda p: pytest.fail("re-hashed a verified file"))
    assert is_verified(target, digest, len(blob))
    monkeypatch.undo()
    target.write_bytes(blob[::-1])  # same size, other content, new mtime
    assert not is_verified(target, digest, len(blob))
    assert not is_verified(tmp_path / "absent.gguf", digest, len(blob))


def test_ensure_default_model_joins_once_then_reuses(tmp_path: Path, monkeypatch) -> None:
    parts, blob = make_parts(tmp_path)
    calls = []
    monkeypatch.setattr(models, "DEFAULT_MODEL_SHA256", hashlib.sha256(blob).hexdigest())
    monkeypatch.setattr(models, "DEFAULT_MODEL_SIZE", len(blob))
    monkeypatch.setattr(models, "default_parts", lambda: calls.append(1) or parts)
    home = tmp_path / "home"
    path = ensure_default_model(home, None)
    assert path == home / "models" / models.DEFAULT_MODEL_FILE and path.read_bytes() == blob
    assert ensure_default_model(home, None) == path and calls == [1]


def test_the_installed_part_packages_add_up_to_the_model() -> None:
    parts = models.default_parts()
    assert [p.name for p in parts] == [f"part{n:02d}.bin" for n in range(1, 23)]
    assert sum(p.stat().st_size for p in parts) == models.DEFAULT_MODEL_SIZE
