"""A TF-IDF + linear SVM on the same clean split: the bar a transformer has to clear."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.data import Row
from training.evaluate import classification_metrics


def _xy(rows: Sequence[Row], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    index = {label: i for i, label in enumerate(labels)}
    return [r.text for r in rows], np.array([index[r.label] for r in rows])


def fit_tfidf_svm(
    train: Sequence[Row], dev: Sequence[Row], labels: Sequence[str]
) -> tuple[Any, dict[str, Any]]:
    """Choose C on dev (macro-F1); returns the fitted pipeline and what was chosen."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    (x_train, y_train), (x_dev, y_dev) = _xy(train, labels), _xy(dev, labels)
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in (0.03, 0.1, 0.3, 1.0):
        features = make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
        )
        model = make_pipeline(features, LinearSVC(C=c)).fit(x_train, y_train)
        f1 = classification_metrics(y_dev, model.predict(x_dev), labels)["macro_f1"]
        if f1 > best[0]:
            best = (f1, c, model)
    dev_f1, c, model = best
    return model, {"model": f"tfidf word 1-2 + char 2-5, LinearSVC(C={c})", "dev_macro_f1": dev_f1}


def score(model: Any, rows: Sequence[Row], labels: Sequence[str]) -> dict[str, Any]:
    x, y = _xy(rows, labels)
    return classification_metrics(y, model.predict(x), labels)


def tfidf_svm(
    train: Sequence[Row], dev: Sequence[Row], test: Sequence[Row], labels: Sequence[str]
) -> dict[str, Any]:
    """Choose C on dev, score test once."""
    model, info = fit_tfidf_svm(train, dev, labels)
    return {**info, "test": score(model, test, labels)}


def tfidf_svm_per_source(
    train: Sequence[Row],
    dev: Sequence[Row],
    tests: Mapping[str, Sequence[Row]],
    labels: Sequence[str],
) -> dict[str, Any]:
    """One baseline on the pooled training data, each source's test split scored once."""
    model, info = fit_tfidf_svm(train, dev, labels)
    return {**info, "test": {name: score(model, rows, labels) for name, rows in tests.items()}}
