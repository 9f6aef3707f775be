"""Static int8 on the tiny checkpoint's fused graph: answers independent of batch-mates, close to
fp32, every weight op int8 with constant scales; and the clipping it trades for speed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import quantize, static
from tests.conftest import onnx_model
from tests.export.test_rowwise import ROWS, alone, probs, run

pytestmark = pytest.mark.slow

CALIBRATION = [np.array(row, np.int64) for row in [*ROWS, [2, 40, 41, 42, 3], [2, 99, 98, 3]]]


@pytest.fixture(scope="module")
def static_int8(intermediate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fused = onnx.load(intermediate / "model.fp32.fused.onnx")
    path = tmp_path_factory.mktemp("static") / "model.int8.onnx"
    channels = static.channel_ranges(fused, CALIBRATION)
    settings = quantize.quantize_static(fused, path, channels, texts=len(CALIBRATION))
    assert settings["scheme"] == static.SCHEME and settings["calibration_texts"] == len(CALIBRATION)
    assert settings["matmuls_int8"] == 2 + 2 * 3 + 2  # QKV per layer, out + FFN in/out, head
    assert settings["gelu"] == "tanh approximation (FastGelu) in 2 nodes"
    return path


def test_every_weight_op_is_int8_with_constant_scales(static_int8: Path) -> None:
    graph = onnx.load(static_int8).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QAttention"] == 2 and ops["MatMulIntegerToFloat"] == 8
    assert ops["QEmbedLayerNormalization"] == 1 and ops["FastGelu"] == 2
    assert not set(ops) & {"MatMul", "Attention", "DynamicQuantizeLinear", "ReduceMax", "BiasGelu"}
    constants = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            assert set(node.input[1:]) <= constants  # no scale computed from the batch


def test_answers_do_not_depend_on_batch_mates(static_int8: Path) -> None:
    one_by_one = probs(alone(static_int8, ROWS))
    assert np.abs(probs(run(static_int8, ROWS)) - one_by_one).max() <= 1e-6
    assert np.abs(probs(run(static_int8, ROWS[::-1]))[::-1] - one_by_one).max() <= 1e-6


def test_stays_close_to_fp32(static_int8: Path, intermediate: Path) -> None:
    fp32 = probs(alone(intermediate / "model.fp32.fused.onnx", ROWS))
    assert np.abs(probs(alone(static_int8, ROWS)) - fp32).max() < 0.05


def test_uint8_params_map_the_range_with_an_exact_zero() -> None:
    scale, zero = static.uint8_params(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zero == 64  # round(1 / (4/255)) = 64
    assert static.uint8_params(0.0, 0.0)[0] > 0  # a constant-zero input still has a scale
    assert static.uint8_params(0.0, 2.0)[1] == 0


def one_matmul(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    return onnx_model(graph, [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_fast_gelu_is_the_tanh_approximation_of_bias_gelu() -> None:
    x = np.linspace(-6, 6, 97, dtype=np.float32).reshape(1, 97)
    bias = np.full(97, 0.25, np.float32)

    def gelu_graph() -> onnx.ModelProto:
        node = helper.make_node("BiasGelu", ["x", "b"], ["y"], domain="com.microsoft")
        graph = helper.make_graph(
            [node],
            "gelu",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 97])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 97])],
            [numpy_helper.from_array(bias, "b")],
        )
        return onnx_model(
            graph, [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        )

    exact = ort.InferenceSession(gelu_graph().SerializeToString()).run(None, {"x": x})[0]
    model = gelu_graph()
    assert static.approximate_gelu(model) == 1 and model.graph.node[0].op_type == "FastGelu"
    approx = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    z = x + bias
    tanh = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    np.testing.assert_allclose(approx, tanh, atol=1e-5)
    assert 0 < np.abs(approx - exact).max() < 2e-3


def test_inputs_beyond_the_calibrated_range_clip() -> None:
    """The trade: inside the range the product is close; beyond it the input saturates."""
    w = np.eye(4, dtype=np.float32)
    model = one_matmul(w)
    assert static.quantize_static(model, {"x": (-1.0, 1.0)}) == 1
    session = ort.InferenceSession(model.SerializeToString())
    inside = np.array([[0.5, -0.25, 0.9, -1.0]], np.float32)
    np.testing.assert_allclose(session.run(None, {"x": inside})[0], inside, atol=2 / 255)
    beyond = np.array([[3.0, -5.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(session.run(None, {"x": beyond})[0], [[1, -1, 0, 1]], atol=2 / 255)


def test_smoothing_divisors_and_the_ranges_they_give() -> None:
    """s_j = peak|x_j|^alpha / peak|W_j|^(1 - alpha), worked out by hand; the tensor's range is
    that of x / s, with 0 inside it."""
    w = np.array([[1.0, -0.5], [4.0, 2.0]], np.float32)  # row peaks 1 and 4
    channels = {"x": (np.array([-1.0, -10.0]), np.array([2.0, 40.0]))}  # peaks 2 and 40
    divisors = static.smoothing(one_matmul(w), channels, 0.5)
    np.testing.assert_allclose(divisors["x"], [np.sqrt(2.0), np.sqrt(10.0)], rtol=1e-6)
    low, high = static.tensor_ranges(channels, {"x": np.array([1.0, 10.0], np.float32)})["x"]
    assert (low, high) == (-1.0, 4.0)
    assert static.tensor_ranges({"x": (np.array([1.0]), np.array([3.0]))})["x"] == (0.0, 3.0)


def test_smoothing_keeps_the_product_and_rescues_small_channels() -> None:
    """One outlier channel (x50) sets the per-tensor scale and crushes the others to a few
    codes; smoothing moves it into the weight, so the small channels keep their resolution."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    x[:, 0] *= 50.0
    calibration = (x.min(axis=0), x.max(axis=0))
    exact = x @ w
    errors = {}
    for alpha in (None, 0.85):
        model = one_matmul(w)
        divisors = None if alpha is None else static.smoothing(model, {"x": calibration}, alpha)
        ranges = static.tensor_ranges({"x": calibration}, divisors)
        assert static.quantize_static(model, ranges, divisors=divisors) == 1
        quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        scale = next(i for i in model.graph.initializer if i.name == quantize.input[1])
        assert list(scale.dims) == []  # per tensor: smoothing is a Mul before it
        assert sum(n.op_type == "Mul" for n in model.graph.node) == (alpha is not None)
        got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        errors[alpha] = float(np.abs(got - exact).mean())
    assert errors[0.85] < 0.5 * errors[None]
    assert errors[0.85] < 0.02 * float(np.abs(exact).mean())
