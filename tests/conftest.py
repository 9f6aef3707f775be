"""Fixtures shared across the test packages.

Nothing here downloads anything: models are built from random weights and tokenizers are
trained in memory. The real data set is read in place (never copied) when it is present.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
# CI keeps the data set next to the repository (../shared/data/twitter_entity).
TWITTER_DATA = REPO / ".." / "shared" / "data" / "twitter_entity"

TINY_LABELS = ["Negative", "Positive"]
TINY_MAX_LENGTH = 64
TINY_CORPUS = [
    "I love this game, the new update is great!",
    "worst patch ever, servers down again and I hate it",
    "@company thanks for the quick fix :) best support",
    "why is the battery so bad after the update?? awful",
    "playing tonight with friends, so much fun #gaming",
    "the price is too high and the quality is terrible",
]


@pytest.fixture(scope="session")
def twitter_data() -> Path:
    """The real Twitter Entity data folder; tests that need it skip when it is absent."""
    if not (TWITTER_DATA / "twitter_validation.csv").is_file():
        pytest.skip(f"data set not found at {TWITTER_DATA}")
    return TWITTER_DATA.resolve()


def build_tiny_tokenizer(corpus: list[str], vocab_size: int = 300) -> Any:
    """A BERT-style uncased WordPiece tokenizer ([CLS] … [SEP]) trained in memory on `corpus`."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789!?.,:;'\"@#$%&()-_/")
    tok.train_from_iterator(
        corpus,
        trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet
        ),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def build_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer DistilBERT classifier (dim 32, 2 heads) with a WordPiece tokenizer, saved
    with `training.checkpoint.save_checkpoint`.

    Every weight is redrawn from N(0, 0.2) (LayerNorm gains around 1, all biases non-zero):
    default init gives near-equal logits and zero biases, which tf2onnx folds away, so parity
    and fusion would be tested on an unrealistically easy graph.
    """
    import numpy as np
    from transformers import (
        DistilBertConfig,
        DistilBertTokenizerFast,
        TFDistilBertForSequenceClassification,
    )

    from training.checkpoint import CheckpointInfo, save_checkpoint

    tok = build_tiny_tokenizer(TINY_CORPUS)
    tokenizer = DistilBertTokenizerFast(tokenizer_object=tok, model_max_length=TINY_MAX_LENGTH)

    config = DistilBertConfig(
        vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=128, pad_token_id=tok.token_to_id("[PAD]"),
        num_labels=len(TINY_LABELS),
    )  # fmt: skip
    model = TFDistilBertForSequenceClassification(config)
    model(model.dummy_inputs)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0.0, 0.2, size=weight.shape) + (1.0 if "gamma" in weight.name else 0.0)
        weight.assign(value.astype(np.float32))
    info = CheckpointInfo(TINY_LABELS, TINY_MAX_LENGTH, base_model="random-tiny-distilbert")
    return save_checkpoint(model, tokenizer, info, folder)


@pytest.fixture(scope="session")
def tiny_checkpoint_factory() -> Callable[[Path, int], Path]:
    """`build_tiny_checkpoint(folder, seed)`, for tests that need a second, different model."""
    return build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random classifier checkpoint in the training → export format (read-only: copy it
    before changing anything)."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "model")


# Tiny, learnable data and a tiny base encoder: training and end-to-end tests run in seconds.
POSITIVE = [
    "love this game",
    "great update, so good",
    "best patch ever",
    "awesome fun night",
    "happy with it",
]
NEGATIVE = [
    "hate this game",
    "awful update, so bad",
    "worst patch ever",
    "terrible boring night",
    "angry with it",
]


def onnx_model(graph: Any, opsets: list[Any]) -> Any:
    """A model for a hand-built graph, with the IR version the exported bundles carry (onnx
    1.23 writes IR 14; onnxruntime 1.29 reads up to 13)."""
    from onnx import helper

    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def write_csv(path: Path, rows: list[tuple[object, ...]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learnable data folder in the real file format: 120 training ids, 20 validation ids
    (which also occur in training, as in the real data), Neutral rows and edge cases."""
    folder = tmp_path_factory.mktemp("data")
    train, val = [], []
    for i in range(140):
        label, pool = ("Positive", POSITIVE) if i % 2 else ("Negative", NEGATIVE)
        text = f"{pool[i % 5]} #{i % 7}"
        (val if i >= 120 else train).append((1000 + i, "Entity", label, text))
    train += [(r[0], r[1], r[2], r[3] + " !") for r in val]  # validation ids leak into training
    train += [(2000, "Entity", "Neutral", "it is a game"), (2001, "Entity", "Positive", "   ")]
    write_csv(folder / "twitter_training.csv", train)
    write_csv(folder / "twitter_validation.csv", val)
    return folder


# The shape of the real Twitter Entity files, small: each training id repeated as paraphrases,
# every validation id also in the training file (the leak the clean protocol removes).
ENTITY_VALIDATION = {"Positive": 40, "Negative": 40, "Neutral": 12, "Irrelevant": 8}
ENTITY_TRAIN_IDS = 400  # ids only in the training file, besides the validation ids
ENTITY_VARIANTS = 3  # paraphrases per training id
NEUTRAL = ["it is a game", "the update is out", "servers restart at noon", "new patch notes"]
IRRELEVANT = ["my cat sleeps", "rain again today", "lunch was pasta", "bus was late"]


def _entity_text(label: str, i: int) -> str:
    pool = {"Positive": POSITIVE, "Negative": NEGATIVE, "Neutral": NEUTRAL}.get(label, IRRELEVANT)
    return f"{pool[i % len(pool)]} #{i}"


@pytest.fixture(scope="session")
def entity_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Twitter Entity folder that every clone has: the export gate, the tamper checks and
    the split protocol run on it when the real data set (`twitter_data`) is absent."""
    folder = tmp_path_factory.mktemp("entity_data")
    labels = [k for k, n in ENTITY_VALIDATION.items() for _ in range(n)]
    val = [(5000 + i, "Entity", label, _entity_text(label, i)) for i, label in enumerate(labels)]
    cycle = ["Positive", "Negative", "Positive", "Negative", "Neutral", "Irrelevant"]
    own = [(10_000 + i, cycle[i % len(cycle)]) for i in range(ENTITY_TRAIN_IDS)]
    train = [
        (tweet_id, "Entity", label, f"{_entity_text(label, tweet_id)} v{v}")
        for tweet_id, label in own + [(r[0], r[2]) for r in val]
        for v in range(ENTITY_VARIANTS)
    ]
    write_csv(folder / "twitter_training.csv", train)
    write_csv(folder / "twitter_validation.csv", val)
    return folder


TINY_RUN = ["--epochs", "16", "--patience", "16", "--lr", "3e-3", "--batch-size", "8",
            "--warmup-ratio", "0", "--max-length", "32", "--soup", "1", "--no-progress"]  # fmt: skip


def train_tiny(out: Path, base: Path, data: Path, *extra: str) -> Path:
    """`python -m training` on the tiny base and data (TINY_RUN), into `out`."""
    from training.cli import main

    args = ["--data", str(data), "--out", str(out), "--base-model", str(base)]
    assert main([*args, *TINY_RUN, *extra]) == 0
    return out


def learned(run: Path) -> tuple[bool, list[float]]:
    """Left the chance plateau (ln 2) and separates the tiny data's test tweets by their words."""
    import json
    import math

    metrics = json.loads((run / "metrics.json").read_text())
    losses = [round(e["train_loss"], 4) for e in metrics["epochs"]]
    return losses[-1] < 0.75 * math.log(2) and metrics["test"]["accuracy"] >= 0.9, losses


def train_until_learned(
    folder: Path, base: Path, data: Path, *extra: str, first: Path | None = None
) -> Path:
    """A tiny run that learned, from up to three seeds (`first`: a run already made with the
    default seed). A random 2-layer encoder can sit on the chance plateau for a whole run: 2-5
    epochs over sixteen seeds here, all 16 in one CI run (the seed and the CPU's float order
    decide). A bug in the training loop would keep every seed there."""
    seen = []
    for seed in ("13", "1", "2"):
        run = first if seed == "13" and first is not None else train_tiny(
            folder / f"seed{seed}", base, data, "--seed", seed, *extra
        )  # fmt: skip
        ok, losses = learned(run)
        if ok:
            return run
        seen.append(losses)
    raise AssertionError(f"no seed left the chance plateau: {seen}")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer DistilBERT encoder (no head) whose vocabulary covers the tiny data's
    words: the `--base-model` for training runs in tests. Seeded: unseeded, its weights depended
    on whatever TF work ran earlier in the session, and some draws made the tiny runs collapse."""
    from transformers import DistilBertConfig, DistilBertTokenizerFast, TFDistilBertModel

    from training.train import set_seed

    folder = tmp_path_factory.mktemp("tiny_base")
    tok = build_tiny_tokenizer([*POSITIVE, *NEGATIVE, "it is a game #0 #1 #2 #3 #4 #5 #6 !"], 200)
    config = DistilBertConfig(
        vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=64,
    )  # fmt: skip
    set_seed(0)
    model = TFDistilBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    DistilBertTokenizerFast(tokenizer_object=tok, model_max_length=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny service bundle (tests/service/tiny_bundle.py: model.onnx, tokenizer.json,
    config.json, manifest.json; read-only: copy it before changing anything)."""
    from tests.service.tiny_bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def pair_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_bundle`, declared an entity-pair model (it then reads an entity per text)."""
    from tests.service.tiny_bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("bundle") / "pair", text_pair=True)
