"""training/calibration.py: the fitted temperature, ECE, and the fold into the head."""

from __future__ import annotations

import types

import numpy as np
import pytest

from training.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    softmax,
)


def sampled(temperature: float, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): T is the right answer."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, 3))
    probs = softmax(logits / temperature)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_recovers_the_true_one(true_t: float) -> None:
    logits, labels = sampled(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)


def test_ece_is_small_when_calibrated_and_large_when_overconfident() -> None:
    logits, labels = sampled(2.0)
    assert expected_calibration_error(softmax(logits / 2.0), labels) < 0.02
    assert expected_calibration_error(softmax(logits), labels) > 0.08
    report = calibration_report(logits, labels, fit_temperature(logits, labels))
    assert report["ece_after"] < report["ece_before"] and report["nll_after"] < report["nll_before"]


def test_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins: {0.9, 0.9}: accuracy 0.5 vs 0.9; {0.6}: 1 vs 0.6; {0.7}: 1 vs 0.7
    expected = 0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_the_fold_divides_the_head_logits() -> None:
    import tensorflow as tf

    head = tf.keras.layers.Dense(3)
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    before = head(x).numpy()
    fold_temperature(types.SimpleNamespace(classifier=head), 2.5)
    np.testing.assert_allclose(head(x).numpy(), before / 2.5, rtol=1e-5, atol=1e-6)
