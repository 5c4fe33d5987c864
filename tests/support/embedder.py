"""A small deterministic embedder for tests of campaign memory: each word (lower-cased,
letters and digits only) is hashed to one of 384 dimensions with a sign; the sum is
L2-normalised. Lines sharing words come out similar, lines without any in common near 0,
and the same text always the same vector. It follows ``glyphoxa_session_control.memory.
Embedder`` (the real ones are in ``glyphoxa_memory``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    dims = 384

    def __init__(self, name: str = "test-hash"):
        self.name = name
        self.calls = 0
        self.fail = False  # set to make embed() raise (an embedder outage)

    def vector(self, text: str) -> numpy.ndarray:
        out = numpy.zeros(self.dims, dtype=numpy.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.sha256(word.encode()).digest()
            index = int.from_bytes(digest[:4], "big") % self.dims
            out[index] += 1.0 if digest[4] & 1 else -1.0
        norm = float(numpy.linalg.norm(out))
        if norm == 0.0:
            out[0] = 1.0
            return out
        return out / norm

    async def embed(self, texts: Sequence[str]) -> numpy.ndarray:
        self.calls += 1
        if self.fail:
            raise RuntimeError("test embedder told to fail")
        return numpy.stack([self.vector(t) for t in texts]) if texts else numpy.zeros(
            (0, self.dims), dtype=numpy.float32)
