"""Dynamic int8 quantization of the fused graph (weights int8, activations quantized per call).

Per-channel weights with the full int8 range were measured best on this stack (99.6% label
agreement vs 98.6% per-tensor; `reduce_range` only hurts on VNNI CPUs), so they are the default.

Dynamic int8 takes one activation scale per tensor, and on some fine-tuned models the all-int8
graph misses the parity gate by a handful of texts. `ladder` lists what the export then tries,
cheapest first: a few fp32 nodes chosen by `sensitivity` (measured on training tweets), and the
FFN output projections, whose GELU inputs carry the few large values that set that scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
QUANTIZED_OPS = ("MatMul", "Attention")
MOST_SENSITIVE = (2, 4)  # ladder rungs: this many of the most sensitive nodes in fp32


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The constant weight of each node dynamic int8 quantizes (MatMul B, Attention QKV)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return {
        node.name: numpy_helper.to_array(inits[node.input[1]])
        for node in model.graph.node
        if node.op_type in QUANTIZED_OPS and len(node.input) > 1 and node.input[1] in inits
    }


def sensitivity(model: onnx.ModelProto, rows: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean relative output error of each quantized node under simulated dynamic int8 (uint8
    per-tensor activations, int8 per-column weights), over `rows` (token ids) run one by one."""
    import onnxruntime as ort

    weights = _weights(model)
    inputs = {node.name: node.input[0] for node in model.graph.node if node.name in weights}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = sorted(set(inputs.values()))
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    quantized = {k: _fake_int8_columns(w) for k, w in weights.items()}
    errors: dict[str, list[float]] = {k: [] for k in weights}
    for ids in rows:
        feed = {
            "input_ids": ids[None, :].astype(np.int32),
            "attention_mask": np.ones((1, len(ids)), np.int32),
        }
        acts = dict(zip(names, session.run(names, feed), strict=True))
        for node, w in weights.items():
            x = acts[inputs[node]].reshape(-1, w.shape[0])
            exact = x @ w
            errors[node].append(
                float(
                    np.linalg.norm(_fake_uint8(x) @ quantized[node] - exact)
                    / (np.linalg.norm(exact) or 1.0)
                )
            )
    return {k: float(np.mean(v)) for k, v in errors.items()}


def _fake_int8_columns(w: np.ndarray) -> np.ndarray:
    scale = np.abs(w).max(axis=0, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    codes: np.ndarray = np.clip(np.round(w / scale), -127, 127)
    return np.asarray(codes * scale)


def _fake_uint8(x: np.ndarray) -> np.ndarray:
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero = float(np.round(-low / scale))
    codes: np.ndarray = np.clip(np.round(x / scale) + zero, 0, 255)
    return (codes - zero) * scale


def ladder(model: onnx.ModelProto, scores: dict[str, float]) -> list[tuple[str, list[str]]]:
    """(name, nodes kept in fp32) for each quantization the export tries: all-int8 first, then
    the fp32 node sets in order of their fp32 weight size (a proxy for their cost)."""
    weights = _weights(model)
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    ffn_out = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and producer.get(node.input[0]) in GELU_OPS
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
    fp32_path: Path,
    int8_path: Path,
    *,
    per_channel: bool = True,
    fp32_nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the int8 model of `fp32_path` to `int8_path` (`fp32_nodes` stay fp32); returns the
    settings for the manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings: dict[str, Any] = {
        "method": "dynamic",
        "weight_type": "QInt8",
        "per_channel": per_channel,
        "reduce_range": False,
        "fp32_nodes": list(fp32_nodes),
    }
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(
            fp32_path,
            int8_path,
            per_channel=per_channel,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(fp32_nodes),
            # Without it, weights feeding the fused contrib ops fail with "Unable to find data
            # type for weight_name".
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return settings
