"""Tiny, learnable data and a tiny DistilBERT base so training tests run in seconds."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer DistilBERT with a WordPiece vocabulary trained on the tiny data's words."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import DistilBertConfig, DistilBertTokenizerFast, TFDistilBertModel

    folder = tmp_path_factory.mktemp("tiny_base")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        POSITIVE + NEGATIVE + ["it is a game #0 #1 #2 #3 #4 #5 #6 !"],
        trainers.WordPieceTrainer(vocab_size=200, special_tokens=special),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    config = DistilBertConfig(
        vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=64,
    )  # fmt: skip
    model = TFDistilBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    DistilBertTokenizerFast(tokenizer_object=tok, model_max_length=64).save_pretrained(folder)
    return folder

