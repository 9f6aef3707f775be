"""`python -m benchmarks.accuracy`: the served bundle scored on the clean protocol's splits."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.accuracy import evaluate_bundle, main
from service.engine import Engine
from tests.conftest import write_csv
from training.protocol import build_splits

LABELS = ("Negative", "Positive")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """40 training tweets and a test set of 1 Negative and 3 Positive (a swapped truth would show)."""
    folder = tmp_path / "data"
    folder.mkdir()
    train = [
        (i, "Xbox", LABELS[i % 2], f"love it {i}" if i % 2 else f"hate it {i}") for i in range(40)
    ]
    test = [
        (100, "Xbox", "Negative", "awful"),
        *((100 + i, "Xbox", "Positive", "great") for i in (1, 2, 3)),
    ]
    write_csv(folder / "twitter_training.csv", [*train, (200, "Xbox", "Neutral", "ok")])
    write_csv(folder / "twitter_validation.csv", test)
    return folder


def test_pair_bundle_is_scored_with_and_without_the_entity(
    pair_bundle: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "served.json"
    assert main(["--bundle", str(pair_bundle), "--data", str(data), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    splits = build_splits(data, LABELS)
    for split, rows in (("dev", splits.dev), ("test", splits.test)):
        assert set(result[split]) == {"with entity", "text only"}
        for figures in result[split].values():
            assert figures["n"] == len(rows) > 0
            assert sum(map(sum, figures["confusion_matrix"]["rows_true_cols_pred"])) == len(rows)


def test_plain_bundle_has_no_entity_mode(tiny_bundle: Path, data: Path) -> None:
    result = evaluate_bundle(tiny_bundle, data)
    assert set(result["dev"]) == set(result["test"]) == {"text only"}


@pytest.mark.parametrize(("always", "share"), [(0, 0.25), (1, 0.75)])
def test_truth_comes_from_the_rows_labels(
    always: int, share: float, tiny_bundle: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that always answers one class scores exactly that class's share of the test set."""

    def constant(self: Engine, rows: list[list[int]]) -> np.ndarray:
        return np.eye(len(LABELS), dtype=np.float32)[[always] * len(rows)]

    monkeypatch.setattr(Engine, "infer", constant)
    test = evaluate_bundle(tiny_bundle, data)["test"]["text only"]
    assert test["n"] == 4 and test["accuracy"] == pytest.approx(share)
