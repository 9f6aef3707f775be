"""Predictions and the figures reported for them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.batching import Encoded, batch_indices, pad


def predict_logits(model: Any, data: Encoded, batch_size: int = 64, pad_id: int = 0) -> np.ndarray:
    """Logits in input order; batches are length-sorted so little compute goes to padding."""
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for idx in batch_indices([len(x) for x in data.ids], batch_size):
        input_ids, mask = pad([data.ids[i] for i in idx], pad_id)
        out[idx] = model(input_ids=input_ids, attention_mask=mask, training=False).logits.numpy()
    return out


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        recall_score,
    )

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        # SemEval-2017 / TweetEval's sentiment metric: mean of the per-class recalls
        "macro_recall": float(
            recall_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)
        ),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "rows_true_cols_pred": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        },
    }


def cross_entropy(logits: np.ndarray, y_true: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y_true)), y_true].mean())
