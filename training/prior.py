"""Prior correction for macro-averaged recall, decided on dev.

Macro recall (SemEval-2017's metric) weighs every class alike, whatever its share. The
Bayes-optimal rule for it divides the model's posterior by the training prior, i.e. adds
-tau * log(prior) to the logits (Menon et al., "Long-tail learning via logit adjustment", 2021).
tau is chosen on the pooled dev set, or imposed by the recipe when a better-matched dev chose it
(a held-out year), and folded into the classifier's bias, so the exported graph and the service
need nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.base_model import classifier_output

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def class_prior(labels: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64) + 1.0
    return counts / counts.sum()


def macro_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    recalls = [np.mean(y_pred[y_true == c] == c) for c in range(n_classes) if np.any(y_true == c)]
    return float(np.mean(recalls))


def choose_shift(
    dev_logits: np.ndarray,
    dev_labels: np.ndarray,
    prior: np.ndarray,
    taus: Sequence[float] = TAUS,
    fixed: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The logit shift with the best dev macro recall (ties: the smaller tau, 0 = no change).

    `fixed` imposes a tau chosen elsewhere (e.g. on a held-out year, whose class mix differs from
    the training years the pooled dev is drawn from); the dev table is still recorded beside it.
    """
    n = dev_logits.shape[1]
    table, trade = {}, {}
    best_tau, best = 0.0, -1.0
    for tau in taus:
        predicted = (dev_logits - tau * np.log(prior)).argmax(1)
        score = macro_recall(dev_labels, predicted, n)
        table[str(tau)] = score
        trade[str(tau)] = {  # what the correction costs: accuracy and each class's recall
            "accuracy": round(float(np.mean(predicted == dev_labels)), 4),
            "recall_by_class": [
                round(float(np.mean(predicted[dev_labels == c] == c)), 4) for c in range(n)
            ],
        }
        if score > best + 1e-12:
            best_tau, best = tau, score
    rule = "highest pooled-dev macro recall over tau in " + str(list(taus))
    if fixed is not None:
        best_tau, rule = fixed, "fixed by the recipe (--prior-correction)"
    shift = (-best_tau * np.log(prior)).astype(np.float32)
    shift -= shift.mean()  # logits are shift-invariant; keep the bias centred
    return shift, {
        "tau": best_tau,
        "train_prior": prior.round(6).tolist(),
        "logit_shift": shift.round(6).tolist(),
        "dev_macro_recall_by_tau": table,
        "dev_tradeoff_by_tau": trade,
        "rule": rule,
    }


def fold_into_bias(model: Any, shift: np.ndarray) -> None:
    """Add the shift to the classification head's last bias."""
    bias = classifier_output(model).bias
    bias.assign(bias.numpy() + shift)
