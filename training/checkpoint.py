"""The on-disk contract between training and export.

A checkpoint folder holds what `save_pretrained` writes (config.json, tf_model.h5), the
tokenizer (tokenizer.json plus its config) and `sentiment.json`, the few facts the rest of
the pipeline must not guess: label order, max length and how text was fed to the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SENTIMENT_FILE = "sentiment.json"


@dataclass(frozen=True)
class CheckpointInfo:
    labels: list[str]  # logit order
    max_length: int
    base_model: str
    text_pair: bool = False  # True when the entity was fed as the first segment
    preprocess: str | None = None  # the service.preprocess name applied to every text

    def save(self, folder: Path) -> None:
        (folder / SENTIMENT_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> CheckpointInfo:
        data: dict[str, Any] = json.loads((Path(folder) / SENTIMENT_FILE).read_text())
        return cls(**data)


def save_checkpoint(model: Any, tokenizer: Any, info: CheckpointInfo, folder: Path) -> Path:
    """Write a TF classifier, its tokenizer and `sentiment.json` into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.id2label = dict(enumerate(info.labels))
    model.config.label2id = {label: i for i, label in enumerate(info.labels)}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info.save(folder)
    return folder


def load_checkpoint(folder: Path, expected: CheckpointInfo) -> tuple[Any, Any]:
    """A checkpoint to train further (`--init-from`): its model and tokenizer, refused when it
    was fed otherwise than this run feeds it (labels, length, pairing, normalisation)."""
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    folder = Path(folder)
    if not (folder / SENTIMENT_FILE).is_file():
        raise ValueError(f"{folder}: not a checkpoint (no {SENTIMENT_FILE})")
    info = CheckpointInfo.load(folder)
    if info != expected:
        raise ValueError(
            f"{folder / SENTIMENT_FILE}: {asdict(info)} differs from this run's {asdict(expected)}"
        )
    model = TFAutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)  # type: ignore[no-untyped-call]
    return model, tokenizer
