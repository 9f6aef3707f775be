"""The labelled texts the parity gate runs on, tokenized exactly as the service will.

By default they are the clean test set of the data set (validation rows with the model's
labels, see the data README). `--texts-file` takes a small TSV instead (`label<TAB>text`, or
`label<TAB>entity<TAB>text` for entity-pair models) so the gate can run without the data.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from export.errors import ExportError
from service.bundle import sha256_file
from service.preprocess import preprocessor
from training.batching import batch_indices, pad
from training.data import Row


@dataclass(frozen=True)
class Texts:
    texts: list[str]
    entities: list[str]  # "" where unknown; only read by entity-pair models
    labels: np.ndarray  # index into the model's labels (logit order)
    source: dict[str, Any] = field(default_factory=dict)  # where they came from, with hashes

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Batch:
    index: np.ndarray  # positions of these rows in the Texts
    input_ids: np.ndarray  # int32 [batch, seq], right-padded
    attention_mask: np.ndarray  # int32 [batch, seq]


def from_data(data_dir: str | Path, labels: Sequence[str], max_texts: int | None = None) -> Texts:
    """The clean test split of the Twitter Entity data set, optionally its first `max_texts` rows."""
    from training.protocol import build_splits

    try:
        splits = build_splits(Path(data_dir), labels)
    except FileNotFoundError as exc:
        raise ExportError(f"data file not found: {exc.filename}") from exc
    rows = splits.test[:max_texts] if max_texts else splits.test
    if not rows:
        raise ExportError(f"no test rows with labels {list(labels)} in {data_dir}")
    return _from_rows(
        rows,
        labels,
        {
            "kind": "data",
            "protocol": "clean test split (training.protocol.build_splits)",
            "path": str(data_dir),
            "rows": len(rows),
            "rows_available": len(splits.test),
            "files_sha256": dict(splits.data_sha256),
        },
    )


def from_file(path: str | Path, labels: Sequence[str], max_texts: int | None = None) -> Texts:
    """Read `label<TAB>text` or `label<TAB>entity<TAB>text` lines; blank lines are skipped."""
    path = Path(path)
    index = {label: i for i, label in enumerate(labels)}
    texts, entities, ys = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read texts file {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3) or parts[0] not in index or not parts[-1].strip():
            raise ExportError(
                f"{path}:{number}: expected 'label<TAB>text' or 'label<TAB>entity<TAB>text' "
                f"with a label in {list(labels)} and a non-empty text"
            )
        ys.append(index[parts[0]])
        entities.append(parts[1] if len(parts) == 3 else "")
        texts.append(parts[-1])
        if max_texts and len(texts) == max_texts:
            break
    if not texts:
        raise ExportError(f"{path} holds no texts")
    return Texts(
        texts=texts,
        entities=entities,
        labels=np.array(ys, dtype=np.int64),
        source={"kind": "file", "path": str(path), "rows": len(texts), "sha256": sha256_file(path)},
    )


def from_sources(
    root: str | Path, sources: Sequence[str], labels: Sequence[str], max_texts: int | None = None
) -> Texts:
    """Every source's test split of the multi-source protocol (training.corpus), in source order."""
    corpus = _corpus(root, sources, labels)
    rows = [r for part in corpus.tests.values() for r in part]
    rows = rows[:max_texts] if max_texts else rows
    source = {
        "kind": "sources",
        "protocol": "test splits of training.corpus (seed 13)",
        "path": str(root),
        "rows": len(rows),
        "per_source": {k: len(v) for k, v in corpus.tests.items()},
        "files_sha256": corpus.data_sha256,
    }
    return _from_rows(rows, labels, source)


def calibration_from_sources(
    root: str | Path, sources: Sequence[str], labels: Sequence[str], n: int = 128
) -> Texts:
    """`n` tweets spread evenly over the pooled *training* split of the sources."""
    rows = _corpus(root, sources, labels).train
    rows = rows[:: max(1, len(rows) // n)][:n]
    source = {
        "kind": "sources",
        "protocol": "pooled training split, evenly spaced",
        "rows": len(rows),
    }
    return _from_rows(rows, labels, source)


def _corpus(root: str | Path, sources: Sequence[str], labels: Sequence[str]) -> Any:
    return _read_corpus(Path(root), tuple(sources), tuple(labels))


@functools.lru_cache(maxsize=1)  # the gate and the calibration read the same files
def _read_corpus(root: Path, sources: tuple[str, ...], labels: tuple[str, ...]) -> Any:
    from training.corpus import build_corpus
    from training.reader import DataError
    from training.sources import SpecError

    try:
        return build_corpus(root, list(sources), labels)
    except (DataError, SpecError, FileNotFoundError, KeyError) as exc:
        raise ExportError(f"cannot read the sources {list(sources)} under {root}: {exc}") from exc


def calibration_from_data(data_dir: str | Path, labels: Sequence[str], n: int = 128) -> Texts:
    """`n` tweets spread evenly over the clean *training* split: what quantization settings are
    ranked on, so the gate's test texts only judge the result."""
    from training.protocol import build_splits

    rows = build_splits(Path(data_dir), labels).train
    rows = rows[:: max(1, len(rows) // n)][:n]
    source = {"kind": "data", "protocol": "clean training split, evenly spaced", "rows": len(rows)}
    return _from_rows(rows, labels, source)


def _from_rows(rows: Sequence[Row], labels: Sequence[str], source: dict[str, Any]) -> Texts:
    index = {label: i for i, label in enumerate(labels)}
    return Texts(
        texts=[r.text for r in rows],
        entities=[r.entity for r in rows],
        labels=np.array([index[r.label] for r in rows], dtype=np.int64),
        source=source,
    )


def encode(
    tokenizer_path: Path,
    texts: Texts,
    *,
    max_length: int,
    text_pair: bool,
    preprocess: str | None = None,
) -> list[np.ndarray]:
    """Token ids per text, normalised and truncated to `max_length` the way training did."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    strategy = "only_second" if text_pair else "longest_first"
    tokenizer.enable_truncation(max_length, strategy=strategy)
    normalise = preprocessor(preprocess)
    bodies = [normalise(t) for t in texts.texts] if normalise else list(texts.texts)
    inputs: list[Any] = list(zip(texts.entities, bodies, strict=True)) if text_pair else bodies
    return [np.asarray(e.ids, dtype=np.int32) for e in tokenizer.encode_batch(inputs)]


def batches(ids: list[np.ndarray], *, pad_id: int, batch_size: int = 32) -> list[Batch]:
    """Length-sorted, right-padded batches, cut the way training cut its evaluation batches."""
    out = []
    for index in batch_indices([len(x) for x in ids], batch_size):
        input_ids, mask = pad([ids[i] for i in index], pad_id)
        out.append(Batch(index=index, input_ids=input_ids, attention_mask=mask))
    return out
