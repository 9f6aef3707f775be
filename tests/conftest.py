"""Fixtures shared across the test packages.

Nothing here downloads anything: models are built from random weights and tokenizers are
trained in memory. The real data set is read in place (never copied) when it is present.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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


def build_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer DistilBERT classifier (dim 32, 2 heads) with a WordPiece tokenizer, saved
    with `training.checkpoint.save_checkpoint`.

    Every weight is redrawn from N(0, 0.2) (LayerNorm gains around 1, all biases non-zero):
    default init gives near-equal logits and zero biases, which tf2onnx folds away, so parity
    and fusion would be tested on an unrealistically easy graph.
    """
    import numpy as np
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import (
        DistilBertConfig,
        DistilBertTokenizerFast,
        TFDistilBertForSequenceClassification,
    )

    from training.checkpoint import CheckpointInfo, save_checkpoint

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789!?.,:;'\"@#$%&()-_/")
    tok.train_from_iterator(
        TINY_CORPUS,
        trainers.WordPieceTrainer(
            vocab_size=300, special_tokens=special, initial_alphabet=alphabet
        ),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
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
