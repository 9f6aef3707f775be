"""A whole `python -m training` run on a tiny model and tiny, learnable data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import train_tiny, train_until_learned
from training.batching import batch_indices, pad
from training.checkpoint import CheckpointInfo
from training.cli import main
from training.data import Row
from training.train import row_weights


def test_batches_are_length_bucketed_and_cover_every_row() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000)
    batches = batch_indices(lengths, 32, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.2 * lengths.sum()  # versus ~2x when padding random batches to their max


def test_pad_is_right_padding() -> None:
    ids, mask = pad([np.array([5, 6, 7]), np.array([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_data: Path) -> Path:
    return train_tiny(tmp_path_factory.mktemp("run"), tiny_base, tiny_data)


@pytest.mark.slow
def test_tiny_model_learns(run: Path, tiny_base: Path, tiny_data: Path, tmp_path: Path) -> None:
    """One of three seeds must leave the chance plateau (tests/conftest.py: why three)."""
    train_until_learned(tmp_path, tiny_base, tiny_data, "--no-leaky", first=run)


@pytest.mark.slow
def test_metrics_file_schema(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("labels", "protocol", "test", "dev", "leaky", "best_epoch", "epochs", "soup_members", "config", "seed",
                "data", "versions", "wall_time_seconds"):  # fmt: skip
        assert key in metrics, key
    assert metrics["protocol"] == "clean" and metrics["labels"] == ["Negative", "Positive"]
    test = metrics["test"]
    assert set(test) >= {"n", "accuracy", "macro_f1", "per_class", "confusion_matrix", "loss"}
    assert test["n"] == 20
    assert set(test["per_class"]) == {"Negative", "Positive"}
    assert sum(map(sum, test["confusion_matrix"]["rows_true_cols_pred"])) == 20
    assert metrics["leaky"]["note"].startswith("LEAKY")
    assert metrics["baselines"]["tfidf_svm"]["test"]["n"] == 20
    assert set(metrics["data"]["data_sha256"]) == {"twitter_training.csv", "twitter_validation.csv"}
    assert metrics["data"]["load_reports"][0]["dropped"] == {"empty_text": 1}
    assert 1 <= metrics["best_epoch"] <= len(metrics["epochs"])
    assert (run / "curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_checkpoint_reloads_with_labels(run: Path) -> None:
    from transformers import TFDistilBertForSequenceClassification

    info = CheckpointInfo.load(run / "model")
    assert info.labels == ["Negative", "Positive"] and info.max_length == 32
    model = TFDistilBertForSequenceClassification.from_pretrained(run / "model")
    assert model.config.id2label == {0: "Negative", 1: "Positive"}
    assert (run / "model" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_four_class_label_set_trains(tmp_path: Path, tiny_base: Path, entity_data: Path) -> None:
    out = tmp_path / "four"
    labels = "Positive,Negative,Neutral,Irrelevant"
    assert main(["--data", str(entity_data), "--out", str(out), "--base-model", str(tiny_base),
                 "--labels", labels, "--epochs", "1", "--limit", "64", "--max-length", "32",
                 "--no-leaky", "--soup", "1", "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == labels.split(",")
    assert len(metrics["test"]["confusion_matrix"]["rows_true_cols_pred"]) == 4


@pytest.mark.slow
def test_soup_is_the_mean_of_its_members(tiny_base: Path, tiny_data: Path) -> None:
    from dataclasses import replace

    from training.protocol import build_splits
    from training.train import TrainConfig, _fine_tune_one, fine_tune

    splits = build_splits(tiny_data, ("Negative", "Positive"))
    config = TrainConfig(base_model=str(tiny_base), epochs=2, patience=2, learning_rate=3e-3,
                         batch_size=8, warmup_ratio=0.0, max_length=32)  # fmt: skip
    members = [
        _fine_tune_one(config, seed, splits.train, splits.dev, progress=False)[0].get_weights()
        for seed in (config.seed, config.seed + 1)
    ]
    assert any(not np.allclose(a, b) for a, b in zip(*members, strict=True))  # data order differs
    model, _, history = fine_tune(replace(config, soup=2), splits.train, splits.dev, progress=False)
    expected = [np.mean(layer, axis=0) for layer in zip(*members, strict=True)]
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert [m["seed"] for m in history.members] == [config.seed, config.seed + 1]
    assert history.best_epoch == 0 and {e["member_seed"] for e in history.epochs} == {13, 14}


@pytest.mark.slow
def test_dev_only_run_never_scores_the_test_set(
    tmp_path: Path, tiny_base: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.cli
    from training.protocol import build_splits

    test_ids = {row.tweet_id for row in build_splits(tiny_data, ("Negative", "Positive")).test}
    scored: list[set[int]] = []
    real = training.cli.evaluate_rows

    def spy(model: object, tokenizer: object, rows: list, config: object) -> dict:
        scored.append({row.tweet_id for row in rows})
        return real(model, tokenizer, rows, config)

    monkeypatch.setattr(training.cli, "evaluate_rows", spy)
    out = tmp_path / "sweep"
    assert main(["--data", str(tiny_data), "--out", str(out), "--base-model", str(tiny_base),
                 "--epochs", "1", "--max-length", "32", "--dev-only", "--soup", "1", "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"] is None and metrics["leaky"] is None and "baselines" not in metrics
    assert metrics["dev"]["n"] > 0 and "dev only" in metrics["protocol"]
    assert scored and not any(ids & test_ids for ids in scored)


def test_source_weights_rescale_to_mean_one() -> None:
    rows = [Row(i, "", "Negative", "t", source) for i, source in enumerate("aaab")]
    weights = row_weights(rows, {"a": 2.0})
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] == pytest.approx(2 * weights[3])  # a's rows weigh twice b's
    assert row_weights(rows, {}).tolist() == [1.0] * 4  # no weights: the plain mean loss
    with pytest.raises(ValueError, match="positive"):
        row_weights(rows, {"b": 0.0})
