"""Static int8: one activation scale per tensor, fixed at export from training tweets.

Like row-wise int8 (`export.rowwise`), a text's answer cannot depend on its batch-mates: the
scales are constants of the graph, not statistics of the batch. It is cheaper, because it drops
row-wise's per-token Abs/ReduceMax/scale passes and keeps the fused Attention fused (as
`QAttention`, whose input scale is a scalar); the timings are in reports/experiments.md.

The price: an activation beyond the calibrated range clips, and one scale per tensor is
coarser than one per token. So the export checks the static graph on held-out training tweets
(`agreement`) before the gate ever sees it, and falls back to row-wise when it falls short.

    x_q = QuantizeLinear(x, s, z)        s, z from the calibrated [min, max] of x (uint8)
    y   = MatMulIntegerToFloat(x_q, Wq, s, sw, z)      int8 per-column weights, u8s8 GEMM
    Attention(x, W, b, mask) -> QAttention(x_q, Wq, b, s, sw, mask, z)
    BiasGelu(x, b) -> FastGelu(x, b)      the tanh approximation (`approximate_gelu`)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.rowwise import MS_DOMAIN, int8_columns

SCHEME = "static-int8"
Ranges = dict[str, tuple[float, float]]  # per tensor
Channels = dict[str, tuple[np.ndarray, np.ndarray]]  # per channel of the last axis: min, max
Divisors = dict[str, np.ndarray]  # per channel: what smoothing divides an activation by


def targets(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes static int8 quantizes: fused Attention and MatMuls with a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if _is_target(n, inits)]


def _is_target(node: onnx.NodeProto, inits: set[str]) -> bool:
    if node.op_type == "Attention":
        return node.domain == MS_DOMAIN
    return node.op_type == "MatMul" and node.input[1] in inits


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The classification head's MatMuls (after the encoder's last SkipLayerNormalization): they
    run on one token per text, so fp32 there costs almost nothing, and their error moves the
    logits directly (a near-tie between classes flips first there)."""
    inits = {i.name for i in model.graph.initializer}
    last = max(
        (i for i, n in enumerate(model.graph.node) if n.op_type == "SkipLayerNormalization"),
        default=-1,
    )
    return [
        n.name
        for n in list(model.graph.node)[last + 1 :]
        if _is_target(n, inits) and n.op_type == "MatMul"
    ]


def activations(
    model: onnx.ModelProto, names: Sequence[str], rows: Sequence[np.ndarray]
) -> Iterator[dict[str, np.ndarray]]:
    """The values of the tensors `names` inside `model` for each row of token ids (one text per
    run): what calibration and the row-wise sensitivity ranking both read."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    for ids in rows:
        feed = {
            "input_ids": ids[None, :].astype(np.int32),
            "attention_mask": np.ones((1, len(ids)), np.int32),
        }
        yield dict(zip(names, session.run(list(names), feed), strict=True))


def channel_ranges(model: onnx.ModelProto, rows: Sequence[np.ndarray]) -> Channels:
    """Per-channel (last axis) [min, max] of every quantized node's input over `rows` (token
    ids, one text per run): read once, whatever smoothing each rung then tries."""
    names = sorted({n.input[0] for n in targets(model)})
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for values in activations(model, names, rows):
        for name, value in values.items():
            flat = value.reshape(-1, value.shape[-1])
            low[name] = np.minimum(low.get(name, 0.0), flat.min(axis=0))
            high[name] = np.maximum(high.get(name, 0.0), flat.max(axis=0))
    return {name: (low[name], high[name]) for name in names}


def smoothing(model: onnx.ModelProto, channels: Channels, alpha: float) -> Divisors:
    """Per-channel divisors moving activation outliers into the weights (SmoothQuant, Xiao et
    al. 2023): x_j / s_j times s_j W_j is the same product, and s_j = peak|x_j|^alpha /
    peak|W_j|^(1 - alpha) evens out the channels one per-tensor scale must cover. A tensor
    feeding several quantized nodes gets one divisor from all of their weights."""
    weights = {i.name: i for i in model.graph.initializer}
    peak_w: dict[str, np.ndarray] = {}
    for node in targets(model):
        w = np.abs(numpy_helper.to_array(weights[node.input[1]])).max(axis=1)
        x = node.input[0]
        peak_w[x] = np.maximum(peak_w.get(x, 0.0), w)
    return {x: channel_divisors(*channels[x], w_peak, alpha) for x, w_peak in peak_w.items()}


def channel_divisors(
    low: np.ndarray, high: np.ndarray, w_peak: np.ndarray, alpha: float
) -> np.ndarray:
    """s_j = peak|x_j|^alpha / peak|W_j|^(1 - alpha) from an input's per-channel [min, max] and
    the largest |weight| of each channel's row (training.qat simulates the same)."""
    x_peak = np.maximum(np.abs(low), np.abs(high))
    s: np.ndarray = np.maximum(x_peak, 1e-5) ** alpha / np.maximum(w_peak, 1e-5) ** (1 - alpha)
    return s.astype(np.float32)


def tensor_ranges(channels: Channels, divisors: Divisors | None = None) -> Ranges:
    """One [min, max] per tensor (of x / s when smoothed), widened to include 0 so that the zero
    point is exact."""
    divisors = divisors or {}
    ranges = {}
    for name, (low, high) in channels.items():
        s = divisors.get(name, np.float32(1.0))
        ranges[name] = (min(0.0, float((low / s).min())), max(0.0, float((high / s).max())))
    return ranges


def approximate_gelu(model: onnx.ModelProto) -> int:
    """BiasGelu (exact, erf) -> FastGelu (tanh approximation, same inputs), in place; returns
    how many. |Δ| <= ~1e-3 per activation, far inside int8's error, for less time per text.
    Static graphs only: the fp32 graph stays exact for the gate's comparison with TF."""
    count = 0
    for node in model.graph.node:
        if node.op_type == "BiasGelu" and node.domain == MS_DOMAIN:
            node.op_type = "FastGelu"
            count += 1
    return count


def uint8_params(low: float, high: float) -> tuple[np.float32, np.uint8]:
    """Scale and zero point mapping [low, high] (low <= 0 <= high) onto 0..255."""
    scale = max(high - low, 1e-8) / 255.0
    zero = int(np.clip(np.round(-low / scale), 0, 255))
    return np.float32(scale), np.uint8(zero)


def quantize_static(
    model: onnx.ModelProto,
    ranges: Ranges,
    fp32_nodes: Sequence[str] = (),
    divisors: Divisors | None = None,
) -> int:
    """Rewrite every `targets` node of the fused graph but `fp32_nodes` to static int8, in
    place, with the activation `ranges` (of x / s for a tensor with smoothing `divisors`: a Mul
    by 1 / s precedes its per-tensor QuantizeLinear, and the weight rows are multiplied by s);
    returns how many nodes were rewritten."""
    divisors = divisors or {}
    weights = {i.name: i for i in model.graph.initializer}
    inits = set(weights)
    new_inits: list[onnx.TensorProto] = []
    quantized: dict[str, tuple[str, str, str]] = {}  # activation -> (codes, scale, zero point)
    dead: set[str] = set()
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray | np.generic) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def codes_of(x: str) -> tuple[str, str, str]:
        if x not in quantized:
            scale, zero = uint8_params(*ranges[x])
            s, z = const(f"staticq/{x}/scale", scale), const(f"staticq/{x}/zp", zero)
            codes = f"staticq/{x}/codes"
            source = x
            if x in divisors:  # x / s as one Mul: ORT's per-axis QuantizeLinear is ~30x slower
                source = f"staticq/{x}/smoothed"
                inverse = const(f"staticq/{x}/inverse", (1.0 / divisors[x]).astype(np.float32))
                nodes.append(helper.make_node("Mul", [x, inverse], [source]))
            nodes.append(helper.make_node("QuantizeLinear", [source, s, z], [codes]))
            quantized[x] = (codes, s, z)
        return quantized[x]

    count = 0
    keep = set(fp32_nodes)
    for node in model.graph.node:
        if not _is_target(node, inits) or node.name in keep:
            nodes.append(node)
            continue
        x_q, s, z = codes_of(node.input[0])
        w_name = node.input[1]
        w = numpy_helper.to_array(weights[w_name])
        if node.input[0] in divisors:
            w = w * divisors[node.input[0]][:, None]
        w_codes, w_scale = int8_columns(w)
        wq, ws = const(f"{w_name}/int8", w_codes), const(f"{w_name}/scale", w_scale)
        dead.add(w_name)
        if node.op_type == "Attention":
            heads = next(a.i for a in node.attribute if a.name == "num_heads")
            inputs = [x_q, wq, node.input[2], s, ws, node.input[3], z]
            op, attrs = "QAttention", {"num_heads": heads}
        else:
            inputs, op, attrs = [x_q, wq, s, ws, z], "MatMulIntegerToFloat", {}
        nodes.append(
            helper.make_node(
                op,
                inputs,
                list(node.output),
                name=f"{node.name}_staticq",
                domain=MS_DOMAIN,
                **attrs,
            )
        )
        count += 1
    kept = [i for i in model.graph.initializer if i.name not in dead]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + new_inits)
    return count
