"""A tiny but real model bundle so the harness is tested end to end in seconds.

The ONNX graph averages token embeddings under the attention mask and applies a linear
layer: the same inputs, outputs and dtypes as the shipped model, at a few KB.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from service.bundle import write_manifest

WORDS = ["love", "hate", "great", "awful", "game", "the", "is", "this", "update", "worst", "best"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]
LABELS = ["Negative", "Positive"]
DIM = 8


def tiny_onnx(path: Path, vocab_size: int, dim: int = DIM, seed: int = 0) -> None:
    """input_ids, attention_mask (int64, [batch, seq]) -> logits [batch, 2] via a masked mean."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(vocab_size, dim)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.normal(size=(dim, len(LABELS))).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(len(LABELS), dtype=np.float32), "b"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis_last"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "w"], ["proj"]),
        helper.make_node("Add", ["proj", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def tiny_tokenizer(path: Path) -> None:
    """A lower-casing WordPiece tokenizer with BERT's [CLS] ... [SEP] template."""
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.save(str(path))


def build_tiny_bundle(folder: Path) -> Path:
    """Write model.onnx (+ model.fp32.onnx beside it), tokenizer.json, config.json, manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_onnx(folder / "model.onnx", len(VOCAB))
    tiny_tokenizer(folder / "tokenizer.json")
    config = {"labels": LABELS, "max_length": 32, "model_name": "tiny-test"}
    (folder / "config.json").write_text(json.dumps(config))
    write_manifest(folder, {"model": "tiny-test"})
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder in the real CSV layout (no header), with commas, quotes and an empty text."""
    folder = tmp_path_factory.mktemp("data")
    rows = [
        '1,Game,Positive,"I love this game, the update is great"',
        '2,Game,Negative,"worst update, I hate it"',
        "3,Game,Neutral,",
        '4,Game,Negative,"this is awful ""really"""',
        "5,Game,Positive,best game",
    ]
    (folder / "twitter_validation.csv").write_text("\n".join(rows) + "\n")
    return folder


def build_tiny_checkpoint(folder: Path) -> Path:
    """A 1-layer TF DistilBERT checkpoint in the training contract's layout (for the seed peer)."""
    from transformers import (
        DistilBertConfig,
        PreTrainedTokenizerFast,
        TFDistilBertForSequenceClassification,
    )

    from training.checkpoint import CheckpointInfo, save_checkpoint

    folder.parent.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(folder.parent / "tok.json")
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_file=str(folder.parent / "tok.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "attention_mask"],
    )
    config = DistilBertConfig(  # type: ignore[no-untyped-call]
        vocab_size=len(VOCAB),
        dim=16,
        n_layers=1,
        n_heads=2,
        hidden_dim=32,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    model = TFDistilBertForSequenceClassification(config)  # type: ignore[no-untyped-call]
    model(model.dummy_inputs)
    info = CheckpointInfo(labels=LABELS, max_length=32, base_model="tiny-test")
    return save_checkpoint(model, tokenizer, info, folder)


TINY_SERVER = Path(__file__).with_name("tiny_server.py")


def _tiny_server_argv(bundle: Path, port: int, *extra: str) -> list[str]:
    import sys

    return [sys.executable, str(TINY_SERVER), "--bundle", str(bundle), "--port", str(port), *extra]


@pytest.fixture(scope="session")
def tiny_server_argv() -> Callable[..., list[str]]:
    """argv(bundle, port, *extra) that serves the tiny bundle (see tiny_server.py) on loopback."""
    return _tiny_server_argv


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TF checkpoint (builds TensorFlow: only tests that need it ask for it)."""
    pytest.importorskip("tensorflow")
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")
