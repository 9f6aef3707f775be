"""The dev-chosen prior correction for macro recall."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from training.prior import choose_shift, class_prior, fold_into_bias, macro_recall


def test_shift_recovers_the_minority_class_when_dev_says_so() -> None:
    rng = np.random.default_rng(0)
    # a model biased toward class 1 (trained on 80 % of it): on a balanced dev, class 0 is missed
    y = np.repeat([0, 1], 500)
    logits = np.stack([rng.normal(0, 1, 1000) + 2.0 * (y == 0), np.full(1000, 2.0)], axis=1)
    prior = class_prior(np.array([0] * 20 + [1] * 80), 2)
    before = macro_recall(y, logits.argmax(1), 2)
    shift, info = choose_shift(logits, y, prior)
    assert info["tau"] > 0 and shift[0] > shift[1]
    assert macro_recall(y, (logits + shift).argmax(1), 2) > before + 0.05
    assert info["dev_macro_recall_by_tau"]["0.0"] == before


def test_no_shift_when_it_does_not_help() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[y] * 5.0  # already perfect
    shift, info = choose_shift(logits, y, class_prior(np.array([0, 0, 0, 0, 1, 2]), 3))
    assert info["tau"] == 0.0 and np.allclose(shift, 0)


def test_fold_into_bias_adds_the_shift() -> None:
    class Bias:
        def __init__(self) -> None:
            self.value = np.array([0.5, -0.5], dtype=np.float32)

        def numpy(self) -> np.ndarray:
            return self.value

        def assign(self, value: np.ndarray) -> None:
            self.value = value

    model = SimpleNamespace(classifier=SimpleNamespace(bias=Bias()))
    fold_into_bias(model, np.array([1.0, -1.0], dtype=np.float32))
    assert model.classifier.bias.value.tolist() == [1.5, -1.5]


def test_a_fixed_tau_is_imposed_and_the_dev_table_still_recorded() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[y] * 5.0  # dev alone would choose tau 0
    prior = class_prior(np.array([0, 0, 0, 0, 1, 2]), 3)
    shift, info = choose_shift(logits, y, prior, fixed=0.25)
    expected = -0.25 * np.log(prior)
    assert info["tau"] == 0.25 and info["rule"].startswith("fixed")
    assert np.allclose(shift, expected - expected.mean(), atol=1e-6)
    assert set(info["dev_macro_recall_by_tau"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
