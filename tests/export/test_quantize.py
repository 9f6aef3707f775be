"""The quantization ladder and the sensitivity ranking it is built from, on a tiny fused graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from export import quantize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fused(
    tiny_checkpoint: Path, export_cli: Callable[..., int], tmp_path_factory: pytest.TempPathFactory
) -> onnx.ModelProto:
    """The tiny checkpoint's fused fp32 graph, as the export quantizes it."""
    folder = tmp_path_factory.mktemp("quantize")
    keep = folder / "keep"
    assert export_cli(tiny_checkpoint, folder / "bundle", "--keep-intermediate", str(keep)) == 0
    return onnx.load(keep / "model.fp32.fused.onnx")


def test_sensitivity_scores_every_quantized_node(fused: onnx.ModelProto) -> None:
    rows = [np.array([101, 7, 8, 9, 102]), np.array([101, 20, 21, 102])]
    scores = quantize.sensitivity(fused, rows)
    quantized = {n.name for n in fused.graph.node if n.op_type in ("MatMul", "Attention")}
    assert set(scores) == quantized
    assert all(np.isfinite(v) and v > 0 for v in scores.values())  # int8 always loses something


def test_ladder_starts_all_int8_then_orders_fp32_sets_by_size(fused: onnx.ModelProto) -> None:
    names = [n.name for n in fused.graph.node if n.op_type in ("MatMul", "Attention")]
    scores = {name: float(i) for i, name in enumerate(names)}  # the last nodes are "worst"
    rungs = quantize.ladder(fused, scores)
    assert rungs[0] == ("int8", [])
    assert [r for r, _ in rungs[1:]].count("int8, FFN output projections fp32") == 1
    most = dict(rungs)["int8, 2 most sensitive nodes fp32"]
    assert most == names[::-1][:2]
    sizes = [sum(quantize._weights(fused)[n].size for n in nodes) for _, nodes in rungs[1:]]
    assert sizes == sorted(sizes)
    assert len({frozenset(nodes) for _, nodes in rungs}) == len(rungs)  # no rung twice
