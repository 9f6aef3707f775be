"""The two ONNX-level rewrites the tf2onnx graph needs before ORT's BERT fusions match it.

Both replace a node by an exact equivalent (to float rounding); the pipeline re-checks the
numbers after every transformation anyway.

1. tf2onnx's `global_pool_optimizer` turns LayerNorm's ReduceMean(axis=-1) on a rank-3 tensor
   into GlobalAveragePool, which ORT's LayerNormalization fusion does not recognise:
   put the ReduceMean back.
2. TF's grappler folds `scores / sqrt(d)` into `scores * (1/sqrt(d))`. ORT's Attention fusion
   then meets two Mul parents on the mask Add (the scale and the mask) and picks the wrong one:
   turn the scale back into a Div, the form it matches unambiguously.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _rank_of(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in values
        if v.type.tensor_type.HasField("shape")
    }


def _opset(model: onnx.ModelProto) -> int:
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def restore_reduce_mean(model: onnx.ModelProto) -> int:
    """Replace GlobalAveragePool(x) by ReduceMean(x, axes=2..rank-1, keepdims=1) in place;
    returns how many nodes were rewritten (nodes of unknown input rank are left alone)."""
    pools = [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]
    if not pools:
        return 0
    ranks = _rank_of(model)
    opset = _opset(model)
    count = 0
    for node in pools:
        rank = ranks.get(node.input[0])
        if rank is None or rank < 3:
            continue
        axes = list(range(2, rank))
        inputs = [node.input[0]]
        attributes: dict[str, Any] = {"keepdims": 1}
        if opset >= 18:  # ReduceMean-18 takes axes as an input
            name = f"{node.name or node.output[0]}__axes"
            model.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), name))
            inputs.append(name)
        else:
            attributes["axes"] = axes
        replacement = helper.make_node(
            "ReduceMean", inputs, list(node.output), name=node.name, **attributes
        )
        node.CopyFrom(replacement)
        count += 1
    return count


def _scalar(model: onnx.ModelProto, name: str) -> float | None:
    for init in model.graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    return None


def scale_as_div(model: onnx.ModelProto, head_dim: int) -> int:
    """Rewrite MatMul → Mul(1/sqrt(head_dim)) → Add → Softmax as MatMul → Div(sqrt(head_dim)) in
    place; returns the number of rewritten nodes. A Mul by any other constant is left alone
    (the Attention kernel hard-codes 1/sqrt(head_dim), so fusing it would be wrong)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    expected = 1.0 / math.sqrt(head_dim)
    divisor = f"attention_scale_sqrt_{head_dim}"
    count = 0
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        add = producer.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            continue
        for mul in (producer.get(name) for name in add.input):
            if mul is None or mul.op_type != "Mul":
                continue
            sources = [producer.get(name) for name in mul.input]
            for i in (0, 1):
                value = _scalar(model, mul.input[1 - i])
                source = sources[i]
                if source is None or source.op_type != "MatMul" or value is None:
                    continue
                if not math.isclose(value, expected, rel_tol=1e-6):
                    continue
                if not any(init.name == divisor for init in model.graph.initializer):
                    root = np.array(math.sqrt(head_dim), dtype=np.float32)
                    model.graph.initializer.append(numpy_helper.from_array(root, divisor))
                div = helper.make_node(
                    "Div", [mul.input[i], divisor], list(mul.output), name=mul.name
                )
                mul.CopyFrom(div)
                count += 1
                break
    return count


def drop_unused_initializers(model: onnx.ModelProto) -> int:
    """Remove initializers no node or graph output reads (the scale constants a rewrite replaced)."""
    used = {name for node in model.graph.node for name in node.input}
    used.update(output.name for output in model.graph.output)
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    return len(unused)


def prepare_for_fusion(model: onnx.ModelProto, head_dim: int) -> dict[str, int]:
    """Apply both rewrites in place; the counts go to the export log and the manifest."""
    counts = {
        "reduce_mean_restored": restore_reduce_mean(model),
        "attention_scale_as_div": scale_as_div(model, head_dim),
    }
    drop_unused_initializers(model)
    return counts
