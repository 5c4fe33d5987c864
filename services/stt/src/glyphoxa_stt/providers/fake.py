"""An instant provider for plumbing tests and the bus benchmark: no model, scripted text.

Each session gets its own cursor into the script, so the n-th utterance a session
transcribes gets the n-th line (cycling when the script runs out). With ``spread`` the k-th
session of the process starts ``k * spread`` lines in, so concurrent sessions say different
lines (the recall benchmark: recall caches the vector of a line it was asked before).
Without a script every utterance says the same fixed text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glyphoxa_runtime.providers import ProviderUnavailable
from glyphoxa_stt.providers.base import SAMPLE_RATE, SttCapabilities, SttProvider, SttResult


class FakeStt(SttProvider):
    name = "fake"
    capabilities = SttCapabilities(prompt=True)

    def __init__(
        self,
        script: Sequence[str] = (),
        *,
        text: str = "hello there",
        delay_s: float = 0.0,
        spread: int = 0,
        start: int = 0,
        sessions: list[int] | None = None,
        **base: float,
    ):
        super().__init__(**base)  # type: ignore[arg-type]
        self._script = tuple(script)
        self._text = text
        self._delay_s = delay_s
        self._spread = spread
        self._sessions = sessions if sessions is not None else [0]  # shared with the copies
        self._base = base
        self._next = start
        self.prompts: list[str | None] = []
        """The prompt of every call, in order (tests look at it)."""

    @staticmethod
    def load_script(path: Path) -> list[str]:
        try:
            script = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable("fake", f"cannot read script {path}: {exc}") from None
        if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
            raise ProviderUnavailable("fake", f"script {path} must be a JSON list of strings")
        return script

    def for_session(self) -> FakeStt:
        start = self._sessions[0] * self._spread
        self._sessions[0] += 1
        return FakeStt(self._script, text=self._text, delay_s=self._delay_s,
                       spread=self._spread, start=start, sessions=self._sessions, **self._base)

    async def _transcribe_impl(
        self, audio: np.ndarray, *, prompt: str | None, language: str,
        keyterms: tuple[str, ...] = ()
    ) -> SttResult:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        self.prompts.append(prompt)
        if self._script:
            text = self._script[self._next % len(self._script)]
            self._next += 1
        else:
            text = self._text
        return SttResult(text, len(audio) / SAMPLE_RATE, self.name)
