"""A tiny but real model bundle (tests/service/tiny_bundle.py) so the harness is tested end to
end in seconds: the same inputs, outputs and dtypes as the shipped model, at a few KB.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.service.tiny_bundle import LABELS, build_bundle, build_tokenizer

# A small vocabulary: any other word (and ",") is one [UNK], which the token counts rely on.
WORDS = ["love", "hate", "great", "awful", "game", "the", "is", "this", "update", "worst", "best"]
MAX_LENGTH = 32


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx, tokenizer.json, config.json (max_length 32), manifest.json."""
    return build_bundle(
        tmp_path_factory.mktemp("bundle") / "tiny", words=WORDS, max_length=MAX_LENGTH
    )


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
    tok = build_tokenizer(folder.parent / "tok.json", WORDS)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_file=str(folder.parent / "tok.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "attention_mask"],
    )
    config = DistilBertConfig(  # type: ignore[no-untyped-call]
        vocab_size=tok.get_vocab_size(),
        dim=16,
        n_layers=1,
        n_heads=2,
        hidden_dim=32,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    model = TFDistilBertForSequenceClassification(config)  # type: ignore[no-untyped-call]
    model(model.dummy_inputs)
    info = CheckpointInfo(labels=LABELS, max_length=MAX_LENGTH, base_model="tiny-test")
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
