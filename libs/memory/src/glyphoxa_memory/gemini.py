"""Gemini embeddings through the ``google-genai`` SDK (the Gemini Developer API, an API key).

One ``embed_content`` call per at most 100 texts (the SDK sends ``batchEmbedContents``,
whose limit that is) with ``output_dimensionality=384``. Gemini normalises only its full
3072-dimensional vectors; shorter ones are truncations, so every row is L2-normalised here
(and cut to 384 should the answer be longer). The task type is ``SEMANTIC_SIMILARITY`` for
every text: stored memories and the line that recalls them are embedded alike, since the
``Embedder`` interface does not tell a query from a document.

The SDK's own retries are off: whoever embeds decides whether to try again, from
``EmbedError.retryable``. Vendor exceptions never leave this module, and the API key is
scrubbed from every message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google import genai
from google.genai import errors, types

from glyphoxa_memory.embedder import (
    DIMS,
    EmbedderUnavailable,
    EmbedError,
    check_texts,
    empty,
    normalise,
)
from glyphoxa_runtime.providers import scrub, status_error

PROVIDER = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
BATCH = 100
TASK_TYPE = "SEMANTIC_SIMILARITY"

_TRANSPORTS = frozenset({"aiohttp", "httpx", "httpcore", "anyio"})


class GeminiEmbedder:
    dims = DIMS

    def __init__(self, api_key: str, model: str = "gemini-embedding-001",
                 base_url: str | None = None, timeout_s: float = 10.0):
        if not api_key:
            raise EmbedderUnavailable(PROVIDER, "no API key: set MEMORY_GEMINI_API_KEY")
        self.name = f"gemini:{model}"
        self.model = model
        self._key = api_key
        self._timeout_s = timeout_s
        self._client: genai.Client | None = genai.Client(
            api_key=api_key,
            vertexai=False,
            http_options=types.HttpOptions(
                base_url=base_url or DEFAULT_BASE_URL,
                timeout=int(timeout_s * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
        self._config = types.EmbedContentConfig(output_dimensionality=DIMS, task_type=TASK_TYPE)

    def __repr__(self) -> str:  # never the key
        return f"GeminiEmbedder(model={self.model!r})"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return empty()
        rows = [await self._batch(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
        return normalise(np.concatenate(rows), PROVIDER)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aio.aclose()

    async def _batch(self, texts: list[str]) -> np.ndarray:
        if self._client is None:
            raise EmbedError(PROVIDER, "the embedder is closed")
        try:
            response = await self._client.aio.models.embed_content(
                model=self.model, contents=texts, config=self._config)  # type: ignore[arg-type]
        except Exception as exc:
            raise self._error(exc) from None
        return _vectors(response, len(texts))

    def _error(self, exc: Exception) -> EmbedError:
        if isinstance(exc, errors.APIError):
            return status_error(PROVIDER, int(exc.code or 0),
                                f"{exc.status or ''} {exc.message or ''}", self._key, EmbedError)
        modules = {c.__module__.split(".")[0] for c in type(exc).__mro__}
        if isinstance(exc, TimeoutError) or (modules & _TRANSPORTS and "Timeout" in type(exc).__name__):
            return EmbedError(PROVIDER, f"no answer within {self._timeout_s:.1f} s", retryable=True)
        if modules & _TRANSPORTS or isinstance(exc, OSError):
            return EmbedError(PROVIDER, f"connection failed: {type(exc).__name__}: "
                                        f"{scrub(str(exc), self._key)}", retryable=True)
        return EmbedError(PROVIDER, f"{type(exc).__name__}: {scrub(str(exc), self._key)}")


def _vectors(response: types.EmbedContentResponse, expected: int) -> np.ndarray:
    """The answer's vectors, cut to ``DIMS``; an answer of the wrong shape is an error."""
    embeddings = response.embeddings or []
    if len(embeddings) != expected:
        raise EmbedError(PROVIDER, f"asked for {expected} embeddings, got {len(embeddings)}",
                         retryable=True)
    rows = []
    for n, embedding in enumerate(embeddings):
        values = embedding.values or []
        if len(values) < DIMS:
            raise EmbedError(PROVIDER, f"embedding {n} has {len(values)} dimensions, "
                                       f"expected {DIMS}")
        rows.append(values[:DIMS])
    return np.asarray(rows, dtype=np.float32)


