"""The clean evaluation protocol (see the data README).

test  = validation rows whose label is in the label set;
train/dev = training rows with those labels whose tweet_id is NOT in the validation file,
split by tweet_id (stratified, seeded) so paraphrases of one tweet never straddle a split.
`leaky=True` builds the variant most published numbers use: the validation ids stay in training.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.bundle import sha256_file
from training.data import TRAIN_FILE, VALIDATION_FILE, LoadReport, Row, read_rows


@dataclass
class Splits:
    train: list[Row]
    dev: list[Row]
    test: list[Row]
    labels: tuple[str, ...]
    leaky: bool
    reports: list[LoadReport] = field(default_factory=list)
    data_sha256: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        def count(rows: list[Row]) -> dict[str, object]:
            return {
                "rows": len(rows),
                "tweet_ids": len({r.tweet_id for r in rows}),
                "labels": dict(Counter(r.label for r in rows)),
            }

        return {
            "protocol": "leaky" if self.leaky else "clean",
            "train": count(self.train),
            "dev": count(self.dev),
            "test": count(self.test),
            "load_reports": [r.as_dict() for r in self.reports],
            "data_sha256": self.data_sha256,
        }


def build_splits(
    data_dir: str | Path,
    labels: Sequence[str],
    *,
    seed: int = 13,
    dev_fraction: float = 0.1,
    leaky: bool = False,
) -> Splits:
    data_dir = Path(data_dir)
    label_set = set(labels)
    unknown = label_set.difference({"Positive", "Negative", "Neutral", "Irrelevant"})
    if unknown:
        raise ValueError(f"labels not in the data set: {sorted(unknown)}")
    train_rows, train_report = read_rows(data_dir / TRAIN_FILE)
    val_rows, val_report = read_rows(data_dir / VALIDATION_FILE)

    test = [r for r in val_rows if r.label in label_set]
    held_out = {r.tweet_id for r in val_rows}
    pool = [r for r in train_rows if r.label in label_set]
    if not leaky:
        pool = [r for r in pool if r.tweet_id not in held_out]
    pool = _dedupe(pool)
    train, dev = split_by_id(pool, dev_fraction=dev_fraction, seed=seed)
    return Splits(
        train=train,
        dev=dev,
        test=test,
        labels=tuple(labels),
        leaky=leaky,
        reports=[train_report, val_report],
        data_sha256={
            TRAIN_FILE: sha256_file(data_dir / TRAIN_FILE),
            VALIDATION_FILE: sha256_file(data_dir / VALIDATION_FILE),
        },
    )


def split_by_id(rows: list[Row], *, dev_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Stratified split of tweet_ids (by each id's majority label); every row follows its id."""
    train, dev, _ = split_groups(rows, (dev_fraction, 0.0), seed)
    return train, dev


def _dedupe(rows: list[Row]) -> list[Row]:
    """Drop exact repeats (same id, label and text); Kaggle's file has some among its paraphrases."""
    seen: set[tuple[int | str, str, str]] = set()
    kept = []
    for row in rows:
        key = (row.tweet_id, row.label, row.text)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def split_groups(
    rows: Sequence[Row], fractions: tuple[float, float], seed: int
) -> tuple[list[Row], list[Row], list[Row]]:
    """Stratified (by each key's majority label), seeded split into train, dev and test; every
    row follows its key, so copies of one tweet never straddle splits."""
    by_key: dict[int | str, list[Row]] = defaultdict(list)
    for row in rows:
        by_key[row.tweet_id].append(row)
    strata: dict[str, list[int | str]] = defaultdict(list)
    for key in sorted(by_key):  # one key type per source
        strata[Counter(r.label for r in by_key[key]).most_common(1)[0][0]].append(key)
    rng = np.random.default_rng(seed)
    dev_keys: set[int | str] = set()
    test_keys: set[int | str] = set()
    for label in sorted(strata):
        keys = np.array(strata[label])
        rng.shuffle(keys)
        n_dev, n_test = (round(len(keys) * f) for f in fractions)
        dev_keys.update(keys[:n_dev].tolist())
        test_keys.update(keys[n_dev : n_dev + n_test].tolist())
    train = [r for r in rows if r.tweet_id not in dev_keys and r.tweet_id not in test_keys]
    dev = [r for r in rows if r.tweet_id in dev_keys]
    return train, dev, [r for r in rows if r.tweet_id in test_keys]
