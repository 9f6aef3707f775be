"""A TF-IDF + linear SVM on the same clean split: the bar a transformer has to clear."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.data import Row
from training.evaluate import classification_metrics


def tfidf_svm(
    train: Sequence[Row], dev: Sequence[Row], test: Sequence[Row], labels: Sequence[str]
) -> dict[str, Any]:
    """Choose C on dev, score test once."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    index = {label: i for i, label in enumerate(labels)}

    def xy(rows: Sequence[Row]) -> tuple[list[str], np.ndarray]:
        return [r.text for r in rows], np.array([index[r.label] for r in rows])

    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = xy(train), xy(dev), xy(test)
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
    report = classification_metrics(y_test, model.predict(x_test), labels)
    return {
        "model": f"tfidf word 1-2 + char 2-5, LinearSVC(C={c})",
        "dev_macro_f1": dev_f1,
        "test": report,
    }
