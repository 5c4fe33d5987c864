"""Embedders for campaign memory (ADR 0007): text in, 384 float32 dims out, L2-normalised.

``make_embedder(MemorySettings())`` picks one from ``MEMORY_*``: ``local`` (default,
all-MiniLM-L6-v2 int8 on onnxruntime, :mod:`glyphoxa_memory.local`), ``gemini``
(:mod:`glyphoxa_memory.gemini`) or ``off`` (None). Every row of ``embed`` has unit length,
so a dot product is the cosine similarity; ``name`` is stored with each vector, so rows of
another embedder can be told apart and re-embedded.
"""

from glyphoxa_memory.embedder import (
    DIMS,
    Embedder,
    EmbedderUnavailable,
    EmbedError,
    make_embedder,
)
from glyphoxa_memory.settings import MemorySettings

__all__ = [
    "DIMS",
    "EmbedError",
    "Embedder",
    "EmbedderUnavailable",
    "MemorySettings",
    "make_embedder",
]
