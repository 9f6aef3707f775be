"""Row-wise int8: activations quantized per token, so a text's answer does not depend on its
batch-mates.

ONNX Runtime's dynamic int8 takes one activation scale per tensor, i.e. per *batch*: a text
run with others gets other scales than run alone, so the service could never batch. Here every
constant-weight MatMul `x @ W` becomes

    s = max|x| over the hidden axis / 127          one scale per token, [batch, seq, 1]
    q = QuantizeLinear(x, s, 128)                   uint8, blocked over the whole hidden axis
    y = MatMulIntegerToFloat(q, Wq, 1, sw, 128) * s (int8 per-column weights, VNNI u8s8 GEMM)

Every op is per token, so padding and batch-mates change nothing (the gate checks it). GELU
outputs (>= -0.17) are shifted by +0.17 and use the full uint8 range with zero point 0 — twice
the resolution of the symmetric code — and the shift's constant term is folded into the
following SkipLayerNormalization's bias. Weights: per-column symmetric int8.

The fused `Attention` op takes its input pre-quantized with one scalar scale (QAttention), so
it is first split back into its QKV MatMul, a Split and `MultiHeadAttention` (same math).
Not the alternatives: one static scale per tensor loses agreement where three classes have
near-ties, `MatMulNBits` runs at about fp32's speed here and s8s8 `MatMulIntegerToFloat` has no
fast kernel (reports/experiments.md).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
OPSET = 21  # QuantizeLinear with block_size: one scale per token without reshapes
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
GELU_MIN = 0.17  # min over x of x * Phi(x) is -0.16997
SCHEME = "rowwise-int8"


def unfuse_attention(model: onnx.ModelProto) -> int:
    """Attention(x, W, b, mask) -> MatMul(x, W), Split, MultiHeadAttention(q, k, v, b, mask),
    in place; returns how many nodes were rewritten."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type != "Attention" or node.domain != MS_DOMAIN:
            nodes.append(node)
            continue
        x, weight, bias, mask = node.input[:4]
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        hidden = int(numpy_helper.to_array(inits[weight]).shape[1]) // 3
        sizes = f"{node.name}_split_sizes"
        model.graph.initializer.append(numpy_helper.from_array(np.full(3, hidden, np.int64), sizes))
        qkv = f"{node.name}_qkv"
        q, k, v = (f"{node.name}_{part}" for part in "qkv")
        nodes += [
            helper.make_node("MatMul", [x, weight], [qkv], name=f"{node.name}_MatMul"),
            helper.make_node("Split", [qkv, sizes], [q, k, v], name=f"{node.name}_Split", axis=-1),
            helper.make_node(
                "MultiHeadAttention",
                [q, k, v, bias, mask],
                list(node.output),
                name=f"{node.name}_MHA",
                domain=MS_DOMAIN,
                num_heads=heads,
            ),
        ]
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def quantizable(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMuls with a constant weight: the nodes row-wise int8 quantizes."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


# u8 x s8 GEMMs on x86 CPUs without VNNI (AVX2 only: e.g. AMD Zen 1-3, Intel before Cascade
# Lake) multiply activation codes (0..255) by weight codes and add the products of two
# neighbouring input rows (2i, 2i+1) in int16 with saturation: 255 x (|w_2i| + |w_2i+1|) must
# stay within 32,767, so each such pair of codes may add up to 128 in magnitude. A full-range
# pair (127 + 127) saturates and gives wrong answers there, and a bundle must answer the same
# on every CPU it may be scheduled on. Budgeting pairs, not single codes, keeps a column's
# large weights at (nearly) 8-bit resolution: a large weight is rarely next to another one.
PAIR_BUDGET = 128
WEIGHT_LIMIT = 127


def int8_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column symmetric int8 codes and scales of a [in, out] weight, every pair of
    neighbouring rows' codes within `PAIR_BUDGET` together."""
    rows = w.shape[0]
    padded = np.vstack([w, np.zeros((rows % 2, w.shape[1]), w.dtype)]).astype(np.float64)
    pairs = np.abs(padded[0::2]) + np.abs(padded[1::2])
    scale = np.maximum(pairs.max(axis=0) / PAIR_BUDGET, np.abs(w).max(axis=0) / WEIGHT_LIMIT)
    scale[scale == 0] = 1.0
    exact = padded / scale
    codes = np.clip(np.round(exact), -WEIGHT_LIMIT, WEIGHT_LIMIT)
    _fit_pairs(codes, exact)
    return codes[:rows].astype(np.int8), scale.astype(np.float32)


def _fit_pairs(codes: np.ndarray, exact: np.ndarray) -> None:
    """Rounding can lift a pair to 129: pull in the code rounded furthest away from zero (its
    error stays under one step), in place."""
    even, odd = codes[0::2], codes[1::2]  # views
    over = np.abs(even) + np.abs(odd) > PAIR_BUDGET
    lift_even = np.abs(even) - np.abs(exact[0::2])
    lift_odd = np.abs(odd) - np.abs(exact[1::2])
    shrink_even = over & (lift_even >= lift_odd)
    even[shrink_even] -= np.sign(even[shrink_even])
    shrink_odd = over & ~shrink_even
    odd[shrink_odd] -= np.sign(odd[shrink_odd])


class _Builder:
    """Collects the new nodes and initializers of one rewrite."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        domain = MS_DOMAIN if op == "MatMulIntegerToFloat" else ""
        self.nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attrs))
        return output


def quantize_rowwise(model: onnx.ModelProto, fp32_nodes: Collection[str] = ()) -> int:
    """Rewrite every quantizable MatMul (but `fp32_nodes`) to row-wise int8, in place; returns
    how many were rewritten. Raises ValueError on a graph shape it does not know."""
    producer = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    targets = {n.name for n in quantizable(model)} - set(fp32_nodes)
    weights = {i.name: i for i in model.graph.initializer}
    b = _Builder()
    one = b.const("rowq/one", np.array(1.0, np.float32))
    eps = b.const("rowq/eps", np.array(1e-8, np.float32))
    zero_point = b.const("rowq/zp128", np.array(128, np.uint8))
    last_axis = b.const("rowq/last_axis", np.array([-1], np.int64))
    shift = b.const("rowq/gelu_shift", np.array(GELU_MIN, np.float32))
    inv127 = b.const("rowq/inv127", np.array(1 / 127, np.float32))
    inv255 = b.const("rowq/inv255", np.array(1 / 255, np.float32))
    done: dict[str, tuple[str, str, bool]] = {}  # activation -> (codes, scale, shifted)
    bias_shift: dict[str, np.ndarray] = {}
    dead: set[str] = set()
    for node in model.graph.node:
        if node.name not in targets:
            b.nodes.append(node)
            continue
        x, w_name = node.input[0], node.input[1]
        w = numpy_helper.to_array(weights[w_name])
        if x not in done:
            p = f"rowq/{x}"
            shifted = x in producer and producer[x].op_type in GELU_OPS
            if shifted:  # x + 0.17 >= 0: uint8 with zero point 0
                base = b.node("Add", [x, shift], f"{p}/shifted")
                absmax = b.node("ReduceMax", [base, last_axis], f"{p}/max", keepdims=1)
                step = inv255
            else:  # symmetric around 128
                base = x
                magnitude = b.node("Abs", [x], f"{p}/abs")
                absmax = b.node("ReduceMax", [magnitude, last_axis], f"{p}/max", keepdims=1)
                step = inv127
            floor = b.node("Max", [absmax, eps], f"{p}/max_eps")
            scale = b.node("Mul", [floor, step], f"{p}/scale")
            q_inputs = [base, scale]
            if not shifted:  # a zero point of the scale's shape (blocked QuantizeLinear)
                shape = b.node("Shape", [scale], f"{p}/scale_shape")
                zp = onnx.helper.make_tensor("zp", TensorProto.UINT8, [1], [128])
                q_inputs.append(b.node("ConstantOfShape", [shape], f"{p}/zp", value=zp))
            codes = b.node(
                "QuantizeLinear", q_inputs, f"{p}/codes", axis=-1, block_size=int(w.shape[0])
            )
            done[x] = (codes, scale, shifted)
        codes, scale, shifted = done[x]
        w_codes, w_scale = int8_columns(w)
        mif = [codes, b.const(f"{w_name}/int8", w_codes), one, b.const(f"{w_name}/scale", w_scale)]
        if not shifted:
            mif.append(zero_point)
        unscaled = b.node("MatMulIntegerToFloat", mif, f"rowq/{node.output[0]}/unscaled")
        b.nodes[-1].name = f"{node.name}_rowq"
        b.node("Mul", [unscaled, scale], node.output[0])
        dead.add(w_name)
        if shifted:
            bias_shift.update(_fold_shift(node, consumers, w_codes, w_scale))
    _replace(model, b, dead, bias_shift)
    return len(targets)


def _fold_shift(
    node: onnx.NodeProto,
    consumers: dict[str, list[onnx.NodeProto]],
    w_codes: np.ndarray,
    w_scale: np.ndarray,
) -> dict[str, np.ndarray]:
    """(x + 0.17) @ W = x @ W + 0.17 colsum(W): the constant goes to the consumer's bias."""
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "SkipLayerNormalization" or len(users[0].input) < 5:
        raise ValueError(f"{node.name}: a GELU-fed MatMul must feed one biased SkipLayerNorm")
    colsum = (w_codes.astype(np.float32) * w_scale).sum(axis=0)
    return {users[0].input[4]: -GELU_MIN * colsum}


def _replace(
    model: onnx.ModelProto, b: _Builder, dead: set[str], bias_shift: dict[str, np.ndarray]
) -> None:
    kept = []
    for init in model.graph.initializer:
        if init.name in dead:
            continue
        if init.name in bias_shift:
            value = numpy_helper.to_array(init) + bias_shift[init.name]
            init = numpy_helper.from_array(value.astype(np.float32), init.name)
        kept.append(init)
    del model.graph.node[:]
    model.graph.node.extend(b.nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + b.inits)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, OPSET)
