"""Errors every provider maps its vendor's exceptions to (no vendor exception leaks out).

``retryable`` says whether the same call may succeed if tried again (timeouts, 5xx, rate
limits) or never will (bad request, unknown voice, missing model).
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound="ProviderError")
RETRYABLE_STATUS = frozenset({408, 409, 429})
DETAIL_CHARS = 300


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


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (a vendor may echo what it was sent), cut to a log line."""
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "..."


def status_error(provider: str, status: int, detail: str, secret: str,
                 error: type[E] = ProviderError) -> E:  # type: ignore[assignment]
    """An HTTP error answer as ``error``: rate limits, timeouts and 5xx may pass if tried
    again; a bad request, a refused key or an unknown model never will."""
    detail = scrub(detail.strip(), secret)
    if status in (401, 403):
        message = f"HTTP {status}: the API key was refused ({detail})"
    elif status == 404:
        message = f"HTTP 404: unknown model or endpoint ({detail})"
    else:
        message = f"HTTP {status}: {detail}"
    return error(provider, message, retryable=status in RETRYABLE_STATUS or status >= 500)
