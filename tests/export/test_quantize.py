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
    names = [n.name for n in prepared.graph.node if n.op_type == "MatMul"]
    scores = {name: float(i) for i, name in enumerate(names)}  # the last nodes are "worst"
    rungs = quantize.ladder(prepared, scores)
    assert rungs[0] == ("int8", [])
    assert [r for r, _ in rungs[1:]].count("int8, FFN output projections fp32") == 1
    most = dict(rungs)["int8, 2 most sensitive nodes fp32"]
    assert most == names[::-1][:2]
    sizes = [sum(quantize._weights(prepared)[n].size for n in nodes) for _, nodes in rungs[1:]]
    assert sizes == sorted(sizes)
    assert len({frozenset(nodes) for _, nodes in rungs}) == len(rungs)  # no rung twice
