"""What every embedder is (``Embedder``), the errors they raise, and ``make_embedder``.

A vendor SDK is imported only in its embedder's module, and only when that embedder is
chosen: ``MEMORY_EMBEDDER=local`` never loads google-genai, ``gemini`` never loads
onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from glyphoxa_runtime.providers import ProviderError

if TYPE_CHECKING:
    from glyphoxa_memory.settings import MemorySettings

DIMS = 384
"""Every embedder's vectors have this many dimensions (the ``vector(384)`` column)."""


class EmbedError(ProviderError):
    """An embedding failed. ``provider`` names the embedder (``local``, ``gemini``);
    ``retryable`` says whether the same texts may succeed if tried again."""


class EmbedderUnavailable(EmbedError):
    """The embedder cannot work here at all: a model file missing or corrupt, no API key."""

    def __init__(self, provider: str, message: str):
        super().__init__(provider, message, retryable=False)


@runtime_checkable
class Embedder(Protocol):
    name: str
    """What made the vectors, stored with each row (``minilm-l6-v2-int8-dq``,
    ``gemini:gemini-embedding-001``): vectors of different names are not comparable."""
    dims: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dims)``, each row of unit length, in the order of ``texts``."""
        ...

    async def close(self) -> None: ...


def make_embedder(settings: MemorySettings) -> Embedder | None:
    """The embedder ``settings`` choose, ready to use; None for ``off``.

    Raises ``EmbedderUnavailable`` when the choice cannot work (a model file that does not
    verify, gemini without an API key), so a misconfigured service fails at start-up.
    """
    if settings.embedder == "off":
        return None
    if settings.embedder == "local":
        from glyphoxa_memory.local import LocalEmbedder

        return LocalEmbedder(threads=settings.threads, kernels=settings.kernels)
    from glyphoxa_memory.gemini import GeminiEmbedder

    return GeminiEmbedder(
        api_key=settings.gemini_api_key.get_secret_value(),
        model=settings.gemini_model,
        base_url=settings.gemini_base_url,
    )


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, or a clear error: a bare string (whose characters would each
    be embedded), an item that is no string, or a blank text (nothing to remember)."""
    if isinstance(texts, str | bytes):
        raise TypeError("embed() takes a sequence of texts, not one string: embed([text])")
    out = list(texts)
    for n, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"text {n} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ValueError(f"text {n} is blank: there is nothing to embed")
    return out


def normalise(vectors: np.ndarray, provider: str) -> np.ndarray:
    """Rows scaled to unit length, as float32; a zero or non-finite row is an error."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] <= 1e-12)
    if bad.any():
        raise EmbedError(provider, f"vector {int(np.flatnonzero(bad)[0])} has no direction "
                                   "(zero or not finite)")
    return vectors / norms


def empty() -> np.ndarray:
    return np.zeros((0, DIMS), dtype=np.float32)
