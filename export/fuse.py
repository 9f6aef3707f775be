"""Fuse the encoder with ONNX Runtime's transformer optimizer and prove it is fully fused.

A partly fused graph still runs and still gives the right answers, just at half the speed, so
a silent fusion regression would cost the project its headline: the counts are checked here
and the export fails when any block is left unfused.
"""

from __future__ import annotations

import logging
from collections import Counter

import onnx

from export.errors import FusionError

MS_DOMAIN = "com.microsoft"
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "Gelu", "BiasGelu")
# Ops that only survive when a pattern was missed (attention softmax, erf gelu, a bare LayerNorm).
LEFTOVER_OPS = ("Softmax", "Erf", "LayerNormalization", "ReduceMean")


def fuse(model: onnx.ModelProto, *, num_heads: int, hidden_size: int) -> onnx.ModelProto:
    """Return a fused copy of `model` (the input is left untouched).

    `opt_level=0` runs only the Python fusions: level 1 would import torch. `model_type="bert"`,
    never "bert_tf": that one fuses Attention with q and k swapped.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    for name in ("onnxruntime.transformers", "fusion_base", "onnx_model", "optimizer"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "producer not matched" etc.
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    optimized = optimize_model(
        copy, model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimized.topological_sort()
    fused = optimized.model
    if not isinstance(fused, onnx.ModelProto):
        raise FusionError("the ORT optimizer returned no model")
    # The contrib ops need their domain declared (ORT's own save_model_to_file adds it too).
    domains = {opset.domain for opset in fused.opset_import}
    if MS_DOMAIN not in domains and any(n.domain == MS_DOMAIN for n in fused.graph.node):
        fused.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def fusion_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node counts of the fused ops and of the ops a missed fusion leaves behind."""
    ops = Counter(node.op_type for node in model.graph.node)
    return {op: ops.get(op, 0) for op in (*FUSED_OPS, *LEFTOVER_OPS)}


def expected_counts(n_layers: int) -> dict[str, int]:
    """A fully fused DistilBERT encoder; Gelu counts BiasGelu and Gelu together."""
    return {
        "EmbedLayerNormalization": 1,
        "Attention": n_layers,
        "SkipLayerNormalization": 2 * n_layers,
        "Gelu": n_layers,
        **dict.fromkeys(LEFTOVER_OPS, 0),
    }


def check_fusion(counts: dict[str, int], n_layers: int) -> None:
    """Raise FusionError listing every count that differs from a fully fused encoder."""
    actual = {**counts, "Gelu": counts.get("Gelu", 0) + counts.get("BiasGelu", 0)}
    problems = [
        f"{op}: {actual.get(op, 0)} (expected {want})"
        for op, want in expected_counts(n_layers).items()
        if actual.get(op, 0) != want
    ]
    if problems:
        raise FusionError("graph is not fully fused: " + "; ".join(problems))
