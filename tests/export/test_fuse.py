from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export import fuse, rewrite
from export.errors import FusionError

pytestmark = pytest.mark.slow


def full_counts(n_layers: int) -> dict[str, int]:
    return {
        "EmbedLayerNormalization": 1,
        "Attention": n_layers,
        "SkipLayerNormalization": 2 * n_layers,
        "Gelu": 0,
        "BiasGelu": n_layers,
        **dict.fromkeys(fuse.LEFTOVER_OPS, 0),
    }


def test_check_fusion_accepts_a_fully_fused_encoder() -> None:
    fuse.check_fusion(full_counts(6), n_layers=6)
    fuse.check_fusion({**full_counts(6), "Gelu": 6, "BiasGelu": 0}, n_layers=6)


def test_check_fusion_names_every_missing_fusion() -> None:
    counts = {**full_counts(6), "Attention": 0, "Softmax": 6, "EmbedLayerNormalization": 0}
    with pytest.raises(FusionError) as err:
        fuse.check_fusion(counts, n_layers=6)
    for text in ("Attention: 0 (expected 6)", "Softmax: 6 (expected 0)", "EmbedLayerNormalization"):
        assert text in str(err.value)


def logits(model: onnx.ModelProto, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0])


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def test_rewritten_tiny_graph_fuses_fully_and_keeps_its_numbers(converted: Any) -> None:
    ckpt = converted.checkpoint
    graph = copy(converted.graph)
    counts = rewrite.prepare_for_fusion(graph, ckpt.head_dim)
    assert counts["attention_scale_as_div"] == ckpt.n_layers
    assert counts["reduce_mean_restored"] == 2 * (2 * ckpt.n_layers + 1)  # 2 means per LayerNorm
    fused = fuse.fuse(graph, num_heads=ckpt.n_heads, hidden_size=ckpt.dim)
    assert fuse.fusion_counts(fused) == full_counts(ckpt.n_layers)

    rng = np.random.default_rng(0)
    ids = rng.integers(5, ckpt.model.config.vocab_size, size=(3, 12), dtype=np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # right padding, as the service sends it
    mask[2, 3:] = 0
    np.testing.assert_allclose(logits(fused, ids, mask), logits(graph, ids, mask), atol=1e-5)


def test_without_the_rewrites_attention_does_not_fuse_and_the_check_fails(converted: Any) -> None:
    ckpt = converted.checkpoint
    fused = fuse.fuse(copy(converted.graph), num_heads=ckpt.n_heads, hidden_size=ckpt.dim)
    counts = fuse.fusion_counts(fused)
    assert counts["Attention"] == 0
    with pytest.raises(FusionError, match="Attention: 0"):
        fuse.check_fusion(counts, ckpt.n_layers)
