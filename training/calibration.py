"""Temperature scaling, fitted on dev and folded into the classification head.

A fine-tuned classifier's softmax is over-confident (Guo et al., "On calibration of modern
neural networks", 2017). One scalar T, chosen to minimise the dev negative log-likelihood, divides
the logits: the labels do not change, the scores become probabilities a user can threshold. T is
folded into the head's kernel and bias, so the exported graph and the service need nothing new.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.base_model import classifier_output

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by size."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.25, 8] with the lowest NLL of logits / T (a grid on log T, then a finer one
    around the best point: the NLL is convex in 1/T, so this finds its minimum)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = min(grid, key=lambda t: nll(logits / t, y))
    step = grid[1] / grid[0]
    fine = np.exp(np.linspace(np.log(best / step), np.log(best * step), 41))
    return float(min(fine, key=lambda t: nll(logits / t, y)))


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide the head's last kernel and bias by T."""
    head = classifier_output(model)
    for weight in (head.kernel, head.bias):
        weight.assign(weight.numpy() / temperature)


def calibration_report(logits: np.ndarray, y: np.ndarray, temperature: float) -> dict[str, Any]:
    """NLL and ECE of the logits as they were (T = 1) and divided by T."""
    return {
        "temperature": round(temperature, 4),
        "nll_before": nll(logits, y),
        "nll_after": nll(logits / temperature, y),
        "ece_before": expected_calibration_error(softmax(logits), y),
        "ece_after": expected_calibration_error(softmax(logits / temperature), y),
        "ece_bins": ECE_BINS,
    }
