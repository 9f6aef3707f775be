"""Row-wise int8, the quantization ladder and the sensitivity ranking it is built from, on a
tiny prepared graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from export import quantize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(intermediate: Path) -> onnx.ModelProto:
    """The tiny checkpoint's fp32 graph as the export quantizes it (Attention unfused)."""
    return onnx.load(intermediate / "model.fp32.unfused.onnx")


def test_sensitivity_scores_every_quantized_node(prepared: onnx.ModelProto) -> None:
    rows = [np.array([101, 7, 8, 9, 102]), np.array([101, 20, 21, 102])]
    scores = quantize.sensitivity(prepared, rows)
    quantized = {n.name for n in prepared.graph.node if n.op_type == "MatMul"}
    assert set(scores) == quantized
    assert all(np.isfinite(v) and v > 0 for v in scores.values())  # int8 always loses something


def test_ladder_starts_all_int8_then_orders_fp32_sets_by_size(prepared: onnx.ModelProto) -> None:
    """The tiny checkpoint: dim 32, FFN 64, 2 layers, a 32x32 pre-classifier and a 32x2 head."""
    names = [n.name for n in prepared.graph.node if n.op_type == "MatMul"]
    scores = {name: float(i) for i, name in enumerate(names)}  # the last nodes are "worst"
    rungs = quantize.ladder(prepared, scores)
    assert rungs[0] == ("int8", [])
    assert [name for name, _ in rungs] == [
        "int8",
        "int8, 2 most sensitive nodes fp32",  # the head: 32x2 + 32x32 = 1,088 weights
        "int8, FFN output projections fp32",  # 2 x 64x32 = 4,096
        "int8, 4 most sensitive nodes fp32",  # the head and layer 2's FFN: 1,088 + 4,096
    ]
    most = dict(rungs)["int8, 2 most sensitive nodes fp32"]
    assert most == names[::-1][:2]
    weight = {n.name: n.input[1] for n in prepared.graph.node if n.op_type == "MatMul"}
    dims = {i.name: list(i.dims) for i in prepared.graph.initializer}
    shapes = [sorted(dims[weight[n]] for n in nodes) for _, nodes in rungs[1:]]
    assert shapes == [
        [[32, 2], [32, 32]],
        [[64, 32], [64, 32]],
        [[32, 2], [32, 32], [32, 64], [64, 32]],
    ]
