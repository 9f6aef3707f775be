"""int8 quantization of the fused graph, in two batch-invariant schemes: static (per-tensor
activation scales calibrated on training tweets, `export.static`: the faster) and row-wise
(per-token scales, `export.rowwise`: the more faithful).

For row-wise, this module also picks what stays fp32 when the all-int8 graph misses the gate:
`ladder` lists what the export then tries, cheapest first: a few fp32 nodes chosen by
`sensitivity` (measured on training tweets), and the FFN output projections. In both schemes the
word embeddings are stored int8 (ONNX Runtime's QEmbedLayerNormalization: weights only).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export import rowwise, static

SCHEMES = ("auto", "static", "rowwise")  # auto: static if it holds on held-out tweets, else rowwise
MOST_SENSITIVE = (2, 4)  # ladder rungs: this many of the most sensitive nodes in fp32
WEIGHTS = "int8 per output column, symmetric; two neighbouring rows' codes within 128 together (rowwise.PAIR_BUDGET)"


def prepare(fused: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 graph the quantizer rewrites: `fused` with Attention split back into its QKV
    MatMul and MultiHeadAttention (a copy; the fused graph is left untouched)."""
    graph = onnx.ModelProto()
    graph.CopyFrom(fused)
    rowwise.unfuse_attention(graph)
    return graph


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The constant weight of each node row-wise int8 quantizes."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in rowwise.quantizable(model)}


def sensitivity(model: onnx.ModelProto, rows: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean relative output error of each quantized node under simulated row-wise int8, over
    `rows` (token ids) run one by one. `model` is a `prepare`d graph."""
    weights = _weights(model)
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    inputs = {node.name: node.input[0] for node in model.graph.node if node.name in weights}
    quantized = {k: _fake_int8_columns(w) for k, w in weights.items()}
    errors: dict[str, list[float]] = {k: [] for k in weights}
    for acts in static.activations(model, sorted(set(inputs.values())), rows):
        for node, w in weights.items():
            x = acts[inputs[node]].reshape(-1, w.shape[0])
            shifted = producer.get(inputs[node]) in rowwise.GELU_OPS
            exact = x @ w
            errors[node].append(
                float(
                    np.linalg.norm(_fake_rows(x, shifted) @ quantized[node] - exact)
                    / (np.linalg.norm(exact) or 1.0)
                )
            )
    return {k: float(np.mean(v)) for k, v in errors.items()}


def _fake_int8_columns(w: np.ndarray) -> np.ndarray:
    codes, scale = rowwise.int8_columns(w)
    return np.asarray(codes.astype(np.float32) * scale)


def _fake_rows(x: np.ndarray, shifted: bool) -> np.ndarray:
    """x through row-wise int8 and back (symmetric, or GELU-shifted with zero point 0)."""
    base = x + rowwise.GELU_MIN if shifted else x
    levels = 255.0 if shifted else 127.0
    scale = np.maximum(np.abs(base).max(axis=-1, keepdims=True), 1e-8) / levels
    low, high = (0, 255) if shifted else (-128, 127)
    codes = np.clip(np.round(base / scale), low, high)
    return np.asarray(codes * scale - (rowwise.GELU_MIN if shifted else 0.0))


def ladder(model: onnx.ModelProto, scores: dict[str, float]) -> list[tuple[str, list[str]]]:
    """(name, nodes kept in fp32) for each quantization the export tries: all-int8 first, then
    the fp32 node sets in order of their fp32 weight size (a proxy for their cost)."""
    weights = _weights(model)
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    ffn_out = [
        node.name
        for node in rowwise.quantizable(model)
        if producer.get(node.input[0]) in rowwise.GELU_OPS
    ]
    ranked = sorted(scores, key=lambda k: -scores[k])
    candidates = [(f"int8, {k} most sensitive nodes fp32", ranked[:k]) for k in MOST_SENSITIVE]
    if ffn_out:
        candidates.append(("int8, FFN output projections fp32", ffn_out))
    rungs: list[tuple[str, list[str]]] = [("int8", [])]
    seen: set[frozenset[str]] = set()
    for name, nodes in sorted(candidates, key=lambda c: sum(weights[n].size for n in c[1])):
        if nodes and frozenset(nodes) not in seen:
            seen.add(frozenset(nodes))
            rungs.append((name, nodes))
    return rungs


def quantize(
    prepared: onnx.ModelProto, int8_path: Path, *, fp32_nodes: Sequence[str] = ()
) -> dict[str, Any]:
    """Write the row-wise int8 model of the `prepare`d graph to `int8_path` (`fp32_nodes`
    stay fp32); returns the settings for the manifest."""
    graph = onnx.ModelProto()
    graph.CopyFrom(prepared)
    rewritten = rowwise.quantize_rowwise(graph, fp32_nodes)
    _save_with_int8_embeddings(graph, int8_path)
    return {
        "scheme": rowwise.SCHEME,
        "activations": "uint8 per token (symmetric around 128; GELU outputs shifted, zero 0)",
        "weights": WEIGHTS,
        "embeddings": "int8 (QEmbedLayerNormalization)",
        "matmuls_int8": rewritten,
        "fp32_nodes": list(fp32_nodes),
    }


def quantize_static(
    fused: onnx.ModelProto,
    int8_path: Path,
    channels: static.Channels,
    *,
    texts: int,
    fp32_nodes: Sequence[str] = (),
    alpha: float | None = None,
) -> dict[str, Any]:
    """Write the static int8 model of the fused graph to `int8_path` (`fp32_nodes` stay fp32),
    its activation ranges from `channels` (calibrated on `texts` training tweets), smoothed
    with `alpha` when given; returns the manifest settings."""
    graph = onnx.ModelProto()
    graph.CopyFrom(fused)
    divisors = None if alpha is None else static.smoothing(fused, channels, alpha)
    ranges = static.tensor_ranges(channels, divisors)
    rewritten = static.quantize_static(graph, ranges, fp32_nodes, divisors)
    approximated = static.approximate_gelu(graph)
    _save_with_int8_embeddings(graph, int8_path)
    return {
        "scheme": static.SCHEME,
        "activations": "uint8 per tensor, scale and zero point fixed from calibration",
        "smoothing": "none" if alpha is None else f"per channel, alpha {alpha} (SmoothQuant)",
        "weights": WEIGHTS,
        "embeddings": "int8 (QEmbedLayerNormalization)",
        "matmuls_int8": rewritten,
        "gelu": f"tanh approximation (FastGelu) in {approximated} nodes",
        "calibration_texts": texts,
        "fp32_nodes": list(fp32_nodes),
    }


def _save_with_int8_embeddings(graph: onnx.ModelProto, int8_path: Path) -> None:
    """Save `graph` with its embedding tables int8 (weight-only, so batch-invariant too)."""
    from onnxruntime.quantization import quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
            staged = Path(tmp) / "model.staged.onnx"
            onnx.save(graph, staged)
            quantize_dynamic(  # the embedding tables only
                staged,
                int8_path,
                op_types_to_quantize=["EmbedLayerNormalization"],
                # Without it, weights feeding contrib ops fail with "Unable to find data type".
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        root.setLevel(level)
