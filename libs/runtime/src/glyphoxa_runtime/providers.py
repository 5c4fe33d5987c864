"""Errors every provider maps its vendor's exceptions to (no vendor exception leaks out).

``retryable`` says whether the same call may succeed if tried again (timeouts, 5xx, rate
limits) or never will (bad request, unknown voice, missing model).
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(self, provider: str, message: str, *, retryable: bool = False):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    def __init__(self, provider: str, seconds: float):
        super().__init__(provider, f"no answer within {seconds:.1f} s", retryable=True)


class ProviderUnavailable(ProviderError):
    """The provider cannot be used here at all (missing model file, library, API key)."""

    def __init__(self, provider: str, message: str):
        super().__init__(provider, message, retryable=False)
