"""Local LLM on the CPU with llama-cpp-python (any GGUF chat model).

The model is loaded once per process and shared by every session of the replica. One
worker thread runs the generations one at a time (llama.cpp contexts are not
thread-safe); tokens travel to the event loop through a queue, and a cancel stops the
generation loop at the next token.

The persona is the stable start of every prompt. ``Llama.set_cache(LlamaRAMCache)``
keeps the evaluated state (KV cache) of prompt prefixes, so switching between NPCs only
evaluates what follows the persona; ``prime`` evaluates a persona ahead of its first turn.
The prompt is rendered with the chat template stored in the GGUF.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaRAMCache
from llama_cpp.llama import LlamaState
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, LLMCapabilities, LLMProvider
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlamaOptions:
    model_path: Path
    n_ctx: int = 2048
    n_threads: int = 2
    n_batch: int = 128
    cache_bytes: int = 256 * 1024 * 1024
    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1


class _LeanStateLlama(Llama):
    """A Llama whose saved states hold only the KV cache, not a copy of the logits buffer.

    The stock ``save_state`` copies up to ``n_batch`` x vocabulary floats (tens of MB for a
    150k-token vocabulary) that sampling never reads unless ``logits_all`` is set, and
    ``load_state`` scans the whole buffer; both made a prompt-cache hit cost ~0.3 s.
    """

    def save_state(self) -> LlamaState:
        ctx = self._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * int(size))()
        written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
        return LlamaState(
            input_ids=self.input_ids[: self.n_tokens].copy(),
            scores=np.empty((0, 0), dtype=np.single),
            n_tokens=self.n_tokens,
            llama_state=ctypes.string_at(buffer, written),
            llama_state_size=written,
            seed=self._seed,
        )

    def load_state(self, state: LlamaState) -> None:
        self.input_ids[: state.n_tokens] = state.input_ids[: state.n_tokens]
        self.n_tokens = state.n_tokens
        self._requires_eval = True
        self._seed = state.seed
        buffer = (ctypes.c_uint8 * state.llama_state_size).from_buffer_copy(state.llama_state)
        if (
            llama_cpp.llama_state_set_data(self._ctx.ctx, buffer, state.llama_state_size)
            != state.llama_state_size
        ):
            raise RuntimeError("failed to restore the llama state")


class _Engine:
    """One loaded model, its prompt cache and the single thread that may touch them.

    Providers that differ only in sampling (an NPC's own temperature) share the engine:
    ``generate`` samples with the calling provider's options."""

    def __init__(self, options: LlamaOptions):
        self.options = options
        self.llm = _LeanStateLlama(
            model_path=str(options.model_path),
            n_ctx=options.n_ctx,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads,
            n_batch=options.n_batch,
            verbose=False,
        )
        self.cache = LlamaRAMCache(capacity_bytes=options.cache_bytes)
        self.llm.set_cache(self.cache)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ProviderUnavailable("llama", f"{options.model_path.name} has no chat template")
        eos = self._token_text(self.llm.token_eos())
        bos = self._token_text(self.llm.token_bos())
        self._chat = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        self._prefix = Jinja2ChatFormatter(
            template, eos_token=eos, bos_token=bos, add_generation_prompt=False
        )
        self.stop = [eos] if eos else []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self.turns_waiting = 0  # generations queued on the executor; priming gives way to them
        self._waiting_lock = threading.Lock()

    def turn_queued(self, delta: int) -> None:
        with self._waiting_lock:
            self.turns_waiting += delta

    def _token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token != -1 else ""

    def tokens(self, system: str, messages: list[ChatMessage], max_tokens: int) -> list[int]:
        """The prompt's tokens; the oldest history is dropped until it fits the context."""
        budget = self.options.n_ctx - max_tokens - 8
        history = [{"role": m.role, "content": m.content} for m in messages]
        while True:
            text = self._chat(messages=[{"role": "system", "content": system}, *history]).prompt
            tokens = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(tokens) <= budget or len(history) <= 1:
                break
            history = history[2:] if len(history) > 2 else history[1:]
        if len(tokens) > budget:
            raise ProviderError(
                "llama",
                f"prompt of {len(tokens)} tokens does not fit n_ctx {self.options.n_ctx}",
                retryable=False,
            )
        return tokens

    def generate(
        self,
        tokens: list[int],
        max_tokens: int,
        seed: int,
        should_stop: Callable[[], bool],
        emit: Callable[[str], None],
        sampling: LlamaOptions | None = None,
    ) -> None:
        """Stream the completion of ``tokens`` to ``emit`` until it ends or ``should_stop()``,
        sampled as ``sampling`` says (default: the options the engine was loaded with)."""
        o = sampling or self.options
        completion = self.llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            stream=True,
            seed=seed,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            repeat_penalty=o.repeat_penalty,
            stop=self.stop,
        )
        try:
            for chunk in completion:
                if should_stop():
                    break
                text = chunk["choices"][0]["text"]  # type: ignore[index]
                if text:
                    emit(text)
        finally:
            completion.close()  # type: ignore[union-attr]

    def reusable_prefix(self, tokens: list[int]) -> int:
        """How much of ``tokens`` is already evaluated, in the context or the prompt cache."""
        best = Llama.longest_token_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)
        try:
            cached = self.cache[tokens]
            best = max(best, Llama.longest_token_prefix(cached.input_ids.tolist(), tokens))
        except KeyError:
            pass
        return min(best, len(tokens) - 1)

    def prime(self, system: str) -> bool:
        """Evaluate and cache ``system`` as a prompt prefix; False if cached or a turn waits."""
        if self.turns_waiting:
            return False
        text = self._prefix(messages=[{"role": "system", "content": system}]).prompt
        tokens = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        try:
            cached = self.cache[tokens]
            if Llama.longest_token_prefix(cached.input_ids.tolist(), tokens) >= len(tokens):
                return False
        except KeyError:
            pass
        self.llm.create_completion(tokens, max_tokens=1, temperature=0.0)
        return True


_EngineKey = tuple[Path, int, int, int, int]
_ENGINES: dict[_EngineKey, _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(options: LlamaOptions) -> _Engine:
    """The process-wide engine for ``options`` (whatever their sampling), loading the model
    on first use."""
    key = (options.model_path, options.n_ctx, options.n_threads, options.n_batch,
           options.cache_bytes)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            if not options.model_path.is_file():
                raise ProviderUnavailable("llama", f"model file not found: {options.model_path}")
            try:
                engine = _Engine(options)
            except ProviderError:
                raise
            except Exception as exc:  # llama.cpp load errors
                raise ProviderUnavailable(
                    "llama", f"cannot load {options.model_path}: {exc}"
                ) from exc
            _ENGINES[key] = engine
            log.info(
                "llm model loaded",
                extra={
                    "model": str(options.model_path),
                    "n_ctx": options.n_ctx,
                    "threads": options.n_threads,
                },
            )
        return engine


class LlamaLLM(LLMProvider):
    name = "llama"
    capabilities = LLMCapabilities(streaming=True, prompt_cache=True, seeded=True, local=True)

    def __init__(self, options: LlamaOptions, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.options = options
        self._engine: _Engine | None = None

    async def start(self) -> None:
        if self._engine is None:
            self._engine = await asyncio.to_thread(engine_for, self.options)

    def describe(self) -> dict[str, object]:
        return {"provider": self.name, "model": self.options.model_path.name}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's vocabulary. Tokenizing only reads the vocabulary,
        so it is safe beside a generation running in the worker thread (llama-server does
        the same)."""
        if self._engine is None or not text:
            return super().count_tokens(text)
        return len(self._engine.llm.tokenize(text.encode(), add_bos=False, special=False))

    async def prime(self, system: str) -> None:
        await self.start()
        assert self._engine is not None
        engine = self._engine
        loop = asyncio.get_running_loop()
        try:
            if await loop.run_in_executor(engine.executor, engine.prime, system):
                log.info("persona primed in the prompt cache")
        except Exception as exc:  # priming only saves time later
            log.warning("priming the persona failed: %s", exc)

    async def _stream_impl(
        self,
        system: str,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        stats: CallStats,
    ) -> AsyncIterator[str]:
        await self.start()
        assert self._engine is not None
        engine = self._engine
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        stop = threading.Event()

        def emit(kind: str, value: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop is gone (process exit): nobody is listening
                stop.set()

        def job() -> None:
            engine.turn_queued(-1)
            try:
                if stop.is_set():
                    return
                tokens = engine.tokens(system, messages, max_tokens)
                stats.prompt_tokens = len(tokens)
                stats.cached_prompt_tokens = engine.reusable_prefix(tokens)
                engine.generate(tokens, max_tokens, seed, stop.is_set,
                                lambda text: emit("text", text), self.options)
            except BaseException as exc:  # handed to the event loop, raised there
                emit("error", exc)
            finally:
                emit("end", None)

        async def watch_cancel() -> None:
            await cancel.wait()
            stop.set()
            queue.put_nowait(("end", None))

        engine.turn_queued(+1)
        loop.run_in_executor(engine.executor, job)
        watcher = asyncio.create_task(watch_cancel(), name="llama-cancel")
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield str(value)
                elif kind == "error":
                    raise _provider_error(value)
                else:
                    return
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.wait({watcher})


def _provider_error(exc: object) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError("llama", f"{type(exc).__name__}: {exc}", retryable=False)
