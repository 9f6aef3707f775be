"""Dynamic int8 quantization of the fused graph (weights int8, activations quantized per call).

Per-channel weights with the full int8 range were measured best on this stack (99.6% label
agreement vs 98.6% per-tensor; `reduce_range` only hurts on VNNI CPUs), so they are the default.

Dynamic int8 takes one activation scale per tensor. The FFN output projections read GELU
outputs, whose few large values set that scale for all the rest, and on some fine-tuned models
the whole-int8 graph misses the parity gate by a handful of texts. `ladder` lists what the
export tries, fastest first: everything int8, then the same with those projections in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")


def ladder(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """(name, nodes kept in fp32) for each quantization the export tries, fastest first."""
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    ffn_out = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and producer.get(node.input[0]) in GELU_OPS
    ]
    rungs: list[tuple[str, list[str]]] = [("int8", [])]
    if ffn_out:
        rungs.append(("int8, FFN output projections fp32", ffn_out))
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
