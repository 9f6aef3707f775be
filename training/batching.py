"""Length-bucketed dynamic padding.

Tweets average ~31 tokens; padding every batch to 128 would quadruple the work. Batches are cut
from length-sorted pools of shuffled rows, so each pads only to its own longest member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.preprocess import preprocessor
from training.data import Row

POOL_BATCHES = 50  # sort within pools of this many batches: buckets, yet still random


@dataclass(frozen=True)
class Encoded:
    ids: list[np.ndarray]  # one int32 array of token ids per row, unpadded
    labels: np.ndarray  # int32 class index per row

    def __len__(self) -> int:
        return len(self.ids)


def encode(
    tokenizer: Any,
    rows: Sequence[Row],
    labels: Sequence[str],
    max_length: int,
    text_pair: bool,
    preprocess: str | None = None,
) -> Encoded:
    """Token ids per row; the texts (never the entities) through the named normalisation, the
    same function the service applies for a bundle that declares it (service.preprocess)."""
    index = {label: i for i, label in enumerate(labels)}
    normalise = preprocessor(preprocess)
    texts = [normalise(r.text) if normalise else r.text for r in rows]
    if text_pair:
        batch = tokenizer(
            [r.entity for r in rows], texts, truncation="only_second", max_length=max_length
        )
    else:
        batch = tokenizer(texts, truncation=True, max_length=max_length)
    return Encoded(
        ids=[np.asarray(x, dtype=np.int32) for x in batch["input_ids"]],
        labels=np.asarray([index[r.label] for r in rows], dtype=np.int32),
    )


def batch_indices(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Index batches of similar length; shuffled when `rng` is given, length-sorted otherwise."""
    order = np.arange(len(lengths))
    sizes = np.asarray(lengths)
    if rng is None:
        order = order[np.argsort(sizes, kind="stable")]
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(order)
    pool = batch_size * POOL_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def pad(ids: Sequence[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest row (the fused Attention kernel in ONNX Runtime assumes right padding)."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(ids), width), dtype=np.int32)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return input_ids, mask
