from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.rewrite import (
    drop_unused_initializers,
    prepare_for_fusion,
    restore_reduce_mean,
    scale_as_div,
)
from tests.conftest import onnx_model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def pool_model(opset: int) -> onnx.ModelProto:
    """x [2, 3, 4] -> GlobalAveragePool, as tf2onnx's optimizer leaves a LayerNorm mean."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="pool")],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 1])],
    )
    return onnx_model(graph, [helper.make_opsetid("", opset)])


def attention_scores_model(scale: float, head_dim: int = 8) -> onnx.ModelProto:
    """q·kᵀ → Mul(scale) → Add(mask) → Softmax: the tail of an attention block after grappler."""
    inits = [
        numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([0.0, 0.0, -10000.0], dtype=np.float32), "mask"),
    ]
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["scaled"], name="scale_mul"),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "scores",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 3, head_dim]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, head_dim, 3]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [2, 3, 3])],
        initializer=inits,
    )
    return onnx_model(graph, [helper.make_opsetid("", 17)])


def test_global_average_pool_becomes_the_equivalent_reduce_mean() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    for opset in (17, 18):
        model = pool_model(opset)
        assert restore_reduce_mean(model) == 1
        assert [n.op_type for n in model.graph.node] == ["ReduceMean"]
        onnx.checker.check_model(model)
        np.testing.assert_allclose(run(model, {"x": x}), x.mean(axis=2, keepdims=True), atol=1e-6)


def test_attention_scale_mul_becomes_div_with_the_same_result() -> None:
    rng = np.random.default_rng(1)
    feeds = {
        "q": rng.normal(size=(2, 3, 8)).astype(np.float32),
        "k": rng.normal(size=(2, 8, 3)).astype(np.float32),
    }
    model = attention_scores_model(1 / math.sqrt(8))
    before = run(model, feeds)
    assert scale_as_div(model, head_dim=8) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Div", "Add", "Softmax"]
    drop_unused_initializers(model)
    assert "scale" not in {i.name for i in model.graph.initializer}
    onnx.checker.check_model(model)
    np.testing.assert_allclose(run(model, feeds), before, atol=1e-6)


def test_a_scale_other_than_one_over_sqrt_head_dim_is_left_alone() -> None:
    # The fused Attention kernel hard-codes 1/sqrt(head_dim): rewriting another scale into the
    # fusable form would make ORT fuse a graph it then computes differently.
    model = attention_scores_model(0.5)
    assert scale_as_div(model, head_dim=8) == 0
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Mul", "Add", "Softmax"]


def test_prepare_for_fusion_reports_counts_and_is_idempotent() -> None:
    model = attention_scores_model(1 / math.sqrt(8))
    assert prepare_for_fusion(model, head_dim=8) == {
        "reduce_mean_restored": 0,
        "attention_scale_as_div": 1,
    }
    assert prepare_for_fusion(model, head_dim=8) == {
        "reduce_mean_restored": 0,
        "attention_scale_as_div": 0,
    }
    onnx.checker.check_model(model)
