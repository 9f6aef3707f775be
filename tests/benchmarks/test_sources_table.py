"""`python -m benchmarks.sources_table`: every bundle x every source's test split, as served."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks.sources_table import main
from service.bundle import load_bundle
from service.engine import Engine
from tests.training.source_fixtures import write_source_root
from training.corpus import build_corpus

SOURCES = ["semeval2017", "apple"]
CLASSES = ("Negative", "Neutral", "Positive")


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.service.tiny_bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("b") / "tiny-3class", labels=list(CLASSES))


def test_table_scores_every_bundle_on_every_test_split(
    tmp_path: Path, three_class: Path, tiny_bundle: Path
) -> None:
    root = write_source_root(tmp_path / "data")
    metrics = tmp_path / "run3" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"labels": list(CLASSES), "baselines": {"tfidf_svm": {"test": {
        "apple": {"n": 5, "accuracy": 0.5, "macro_f1": 0.4, "macro_recall": 0.45}}}}}))  # fmt: skip
    out = tmp_path / "report" / "accuracy"
    args = ["--bundle", str(three_class), "--bundle", str(tiny_bundle), "--data", str(root),
            "--sources", ",".join(SOURCES), "--metrics", str(metrics), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    tests = build_corpus(root, SOURCES, CLASSES).tests
    three = result["bundles"]["tiny-3class"]["tests"]
    binary = result["bundles"][tiny_bundle.name]["tests"]
    for name, rows in tests.items():
        counts = Counter(r.label for r in rows)
        assert three[name]["3class"]["n"] == len(rows)
        assert (
            three[name]["binary"]["n"]
            == binary[name]["binary"]["n"]
            == counts["Negative"] + counts["Positive"]
        )
        assert "3class" not in binary[name]  # a binary bundle has no Neutral to score
    # the binary reading of the 3-class bundle is its Negative-vs-Positive argmax, text by text
    engine = Engine(load_bundle(three_class), threads=1)
    polar = [r for r in tests["apple"] if r.label != "Neutral"]
    probs = np.stack([engine.infer([e.ids])[0] for e in engine.encode([r.text for r in polar])])
    picked = np.where(probs[:, 0] >= probs[:, 2], "Negative", "Positive")
    accuracy = float(np.mean(picked == np.array([r.label for r in polar])))
    assert three["apple"]["binary"]["accuracy"] == pytest.approx(accuracy)
    table = out.with_suffix(".md").read_text()
    # header 2, the 3-class bundle 2 sources x 2 views, the binary bundle 2, the baseline 1
    assert table.count("\n") == 2 + 4 + 2 + 1
    assert result["checkpoints"]["run3"]["tests"] == {}  # that run wrote no test figures
    assert "TF-IDF + LinearSVC (run3 run, 3 classes) | apple | 5 |" in table
