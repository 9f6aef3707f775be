"""Row-wise int8 on the tiny checkpoint's graphs: same math unfused, answers independent of
batch-mates, close to fp32, and the GELU shift folded exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import quantize, rowwise
from service.engine import pad_right
from tests.conftest import onnx_model

pytestmark = pytest.mark.slow

ROWS = [  # ids within the tiny tokenizer's vocabulary (< 200), lengths 3 to 30
    [2, 7, 8, 9, 3],
    [2, 20, 21, 3],
    [2, *range(30, 58), 3],
    [2, 150, 3],
    [2, 5, 6, 7, 8, 9, 10, 11, 3],
]


def run(model: onnx.ModelProto | Path, rows: list[list[int]]) -> np.ndarray:
    source = model if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source)
    ids, mask = pad_right(rows, 0, np.int32, np.int32)
    return np.asarray(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])


def alone(model: onnx.ModelProto | Path, rows: list[list[int]]) -> np.ndarray:
    return np.concatenate([run(model, [row]) for row in rows])


def probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def test_unfused_attention_is_the_same_math(intermediate: Path) -> None:
    fused = onnx.load(intermediate / "model.fp32.fused.onnx")
    unfused = quantize.prepare(fused)
    ops = [n.op_type for n in unfused.graph.node]
    assert ops.count("Attention") == 0 and ops.count("MultiHeadAttention") == 2
    np.testing.assert_allclose(run(unfused, ROWS), run(fused, ROWS), atol=1e-5)


def test_int8_answers_do_not_depend_on_batch_mates(intermediate: Path) -> None:
    int8 = intermediate / "model.int8.onnx"
    one_by_one = probs(alone(int8, ROWS))
    assert np.abs(probs(run(int8, ROWS)) - one_by_one).max() <= 1e-6
    assert np.abs(probs(run(int8, ROWS[::-1]))[::-1] - one_by_one).max() <= 1e-6


def test_dynamic_int8_of_the_same_graph_does_depend_on_them(
    intermediate: Path, tmp_path: Path
) -> None:
    """The contrast that makes the test above mean something: ORT's dynamic int8 (one scale
    per batch) moves these answers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = tmp_path / "dynamic.onnx"
    quantize_dynamic(
        intermediate / "model.fp32.fused.onnx",
        out,
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    assert np.abs(probs(run(out, ROWS)) - probs(alone(out, ROWS))).max() > 1e-5


def test_int8_stays_close_to_fp32(intermediate: Path) -> None:
    fp32 = probs(alone(intermediate / "model.fp32.unfused.onnx", ROWS))
    int8 = probs(alone(intermediate / "model.int8.onnx", ROWS))
    assert np.abs(int8 - fp32).max() < 0.05


def ffn_block(hidden: int = 8, inner: int = 32, seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul -> BiasGelu -> MatMul -> SkipLayerNorm(+x, bias): one FFN."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="ffn_in"),
        helper.make_node("BiasGelu", ["h", "b1"], ["g"], domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="ffn_out"),
        helper.make_node(
            "SkipLayerNormalization",
            ["y", "x", "gamma", "beta", "b2"],
            ["out"],
            domain="com.microsoft",
            epsilon=1e-12,
        ),
    ]
    shape = ["batch", "seq", hidden]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
        [
            init("w1", hidden, inner),
            init("b1", inner),
            init("w2", inner, hidden),
            init("gamma", hidden),
            init("beta", hidden),
            init("b2", hidden),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return onnx_model(graph, opsets)


def test_gelu_shift_is_folded_into_the_next_bias() -> None:
    model = ffn_block()
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32)
    exact = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    assert rowwise.quantize_rowwise(quantized) == 2
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and "MatMul" not in ops
    got = ort.InferenceSession(quantized.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(got - exact).max() < 0.05  # layer-normed outputs of order 1
    unfolded = onnx.ModelProto()
    unfolded.CopyFrom(quantized)
    bias = next(i for i in unfolded.graph.initializer if i.name == "b2")
    original = next(i for i in model.graph.initializer if i.name == "b2")
    bias.CopyFrom(original)  # drop the fold: the shift's 0.17 colsum(W) term is then missing
    wrong = ort.InferenceSession(unfolded.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(wrong - exact).max() > 5 * np.abs(got - exact).max()


def test_an_all_zero_token_stays_finite() -> None:
    model = ffn_block()
    rowwise.quantize_rowwise(model)
    x = np.zeros((1, 3, 8), np.float32)
    x[0, 1] = 1.0
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert np.isfinite(out).all()


def test_fp32_nodes_are_left_alone() -> None:
    model = ffn_block()
    assert rowwise.quantize_rowwise(model, fp32_nodes=["ffn_out"]) == 1
    assert [n.name for n in model.graph.node if n.op_type == "MatMul"] == ["ffn_out"]


def test_neighbouring_weight_codes_fit_an_int16_pair_sum() -> None:
    """u8 x s8 GEMMs without VNNI add the products of rows 2i and 2i+1 in int16: 255 x the pair's
    code magnitudes must stay within 32,767, whatever the weights (here: a large weight next to
    another in some columns, an odd row count)."""
    w = np.random.default_rng(3).normal(size=(65, 16)).astype(np.float32)
    w[10, :4] = w[11, :4] = 9.0  # two large neighbours
    w[64, 5] = -12.0  # the last, unpaired row
    codes, scale = rowwise.int8_columns(w)
    c = np.vstack([codes, np.zeros((1, 16), np.int8)]).astype(np.int64)
    assert (255 * (np.abs(c[0::2]) + np.abs(c[1::2]))).max() <= 32_767
    assert np.abs(codes).max() <= 127 and codes[64, 5] == -127
    assert (np.abs(c[0::2]) + np.abs(c[1::2])).max(axis=0)[:4].tolist() == [128] * 4
    assert np.abs(codes * scale - w).max() <= scale.max() + 1e-6


def test_pair_budget_resolution_beats_seven_bit_codes() -> None:
    """The budget binds only where two large weights are neighbours, so typical weights keep
    about twice the levels of codes limited to +-63 each."""
    w = np.random.default_rng(4).normal(size=(384, 64)).astype(np.float32)
    codes, scale = rowwise.int8_columns(w)
    seven = np.abs(w).max(axis=0) / 63  # the old scheme, computed here
    error_7 = np.abs(np.round(w / seven) * seven - w).mean()
    assert np.abs(codes * scale - w).mean() < 0.7 * error_7


def test_an_int8_gemm_stays_exact_at_full_scale_activations() -> None:
    """Activations at 255 everywhere through ONNX Runtime's MatMulIntegerToFloat with the
    budgeted codes give the exact integer product on any x86 CPU (without the budget, full
    8-bit codes are off by millions on CPUs without VNNI)."""
    w = np.random.default_rng(5).normal(size=(96, 24)).astype(np.float32)
    w[::7] *= 6.0  # some large rows
    codes, _ = rowwise.int8_columns(w)
    a = np.full((8, 96), 255, np.uint8)
    nodes = [
        helper.make_node(
            "MatMulIntegerToFloat", ["a", "w", "sa", "sw", "za"], ["y"], domain="com.microsoft"
        )
    ]
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [8, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 24])],
        [
            numpy_helper.from_array(codes, "w"),
            numpy_helper.from_array(np.float32(1.0), "sa"),
            numpy_helper.from_array(np.ones(24, np.float32), "sw"),
            numpy_helper.from_array(np.uint8(0), "za"),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    got = ort.InferenceSession(onnx_model(graph, opsets).SerializeToString()).run(None, {"a": a})
    assert np.array_equal(got[0], (a.astype(np.int64) @ codes.astype(np.int64)).astype(np.float32))
