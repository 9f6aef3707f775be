from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export import texts
from export.errors import ExportError
from export.parity import Thresholds, classification, gate, run_batches
from tests.conftest import ENTITY_VALIDATION

LABELS = ["Negative", "Positive"]


def logits_for(predicted: list[int], margin: float = 2.0) -> np.ndarray:
    out = np.zeros((len(predicted), 2), dtype=np.float32)
    out[np.arange(len(predicted)), predicted] = margin
    return out


def test_classification_metrics_match_a_hand_count() -> None:
    y = np.array([0, 0, 1, 1, 1])
    m = classification(logits_for([0, 1, 1, 1, 0]), y)
    # class 0: tp 1, fp 1, fn 1 -> F1 0.5; class 1: tp 2, fp 1, fn 1 -> F1 2/3
    assert m == {
        "n": 5,
        "accuracy": pytest.approx(0.6),
        "macro_f1": pytest.approx((0.5 + 2 / 3) / 2),
    }


def test_gate_passes_identical_graphs() -> None:
    tf = logits_for([0, 1, 1, 0] * 50)
    report = gate(
        tf_logits=tf,
        fp32_stages={"tf2onnx": tf + 1e-6, "fused": tf - 1e-6},
        int8_runs={"batch1": tf + 0.01, "batch32": tf - 0.01},
        labels=np.array([0, 1, 1, 0] * 50),
        thresholds=Thresholds(),
    )
    assert report.passed, report.failures
    parity = report.metrics["parity"]
    assert parity["max_abs_logit_diff_tf_fp32"] == pytest.approx(1e-6, rel=0.1)
    assert parity["label_agreement_int8_fp32"] == 1.0
    assert report.metrics["int8"]["accuracy"] == 1.0


def test_gate_fails_a_stage_whose_logits_drift_and_names_it() -> None:
    tf = logits_for([0, 1] * 100)
    drifted = tf.copy()
    drifted[3, 1] += 0.002
    report = gate(
        tf_logits=tf,
        fp32_stages={"tf2onnx": tf, "fused": drifted},
        int8_runs={"batch1": drifted},
        labels=np.array([0, 1] * 100),
        thresholds=Thresholds(),
    )
    assert not report.passed
    assert len(report.failures) == 1
    assert "fused" in report.failures[0] and "0.002" in report.failures[0]


def test_gate_fails_int8_label_flips_and_accuracy_loss() -> None:
    y = np.array([0, 1] * 100)
    fp32 = logits_for(list(y))
    flipped = list(y)
    flipped[:3] = [1 - v for v in flipped[:3]]  # 3 of 200 flip: 98.5% agreement, -1.5 pt
    report = gate(
        tf_logits=fp32,
        fp32_stages={"fused": fp32},
        int8_runs={"batch1": logits_for(flipped)},
        labels=y,
        thresholds=Thresholds(),
    )
    assert len(report.failures) == 2
    assert "agreement 98.50% < 99.00%" in report.failures[0]
    assert "-1.50 pt" in report.failures[1]
    # one flip in 200 is within both limits
    flipped[1:3] = y[1:3]
    report = gate(
        tf_logits=fp32,
        fp32_stages={"fused": fp32},
        int8_runs={"batch1": logits_for(flipped)},
        labels=y,
        thresholds=Thresholds(),
    )
    assert report.passed, report.failures


def test_gate_fails_nan_logits() -> None:
    tf = logits_for([0, 1])
    broken = tf.copy()
    broken[0, 0] = np.nan
    report = gate(
        tf_logits=tf,
        fp32_stages={"fused": broken},
        int8_runs={"batch1": tf},
        labels=np.array([0, 1]),
        thresholds=Thresholds(),
    )
    assert not report.passed


def test_batches_pad_right_and_run_batches_restores_text_order() -> None:
    ids = [np.array([2, 7, 3]), np.array([2, 3]), np.array([2, 8, 9, 10, 3]), np.array([2, 5, 3])]
    batches = texts.batches(ids, pad_id=0, batch_size=2)
    assert [b.input_ids.shape for b in batches] == [(2, 3), (2, 5)]
    for batch in batches:
        for row, i in enumerate(batch.index):
            n = len(ids[i])
            assert batch.input_ids[row, :n].tolist() == ids[i].tolist()
            assert batch.attention_mask[row].tolist() == [1] * n + [0] * (
                batch.input_ids.shape[1] - n
            )
            assert not batch.input_ids[row, n:].any()

    def first_token_and_length(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.stack([input_ids[:, 1], mask.sum(1)], axis=1).astype(np.float32)

    out = run_batches(first_token_and_length, batches, len(ids))
    assert out.tolist() == [[7, 3], [3, 2], [8, 5], [5, 3]]


def test_texts_file_reads_two_and_three_columns(tmp_path: Path) -> None:
    path = tmp_path / "texts.tsv"
    path.write_text('Positive\tlove it\n\nNegative\tGame\thate it, "really"\nPositive\tok\n')
    got = texts.from_file(path, LABELS)
    assert got.texts == ["love it", 'hate it, "really"', "ok"]
    assert got.entities == ["", "Game", ""]
    assert got.labels.tolist() == [1, 0, 1]
    assert got.source["kind"] == "file" and len(got.source["sha256"]) == 64
    assert len(texts.from_file(path, LABELS, max_texts=2)) == 2


def test_texts_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "texts.tsv"
    path.write_text("Positive\tfine\nNeutral\tnot a binary label\n")
    with pytest.raises(ExportError, match=r"texts.tsv:2"):
        texts.from_file(path, LABELS)
    with pytest.raises(ExportError, match="cannot read"):
        texts.from_file(tmp_path / "missing.tsv", LABELS)


def test_clean_test_split_of_the_real_data(twitter_data: Path) -> None:
    got = texts.from_data(twitter_data, LABELS)
    assert len(got) == 543  # 277 Positive + 266 Negative, per the data README
    assert got.labels.sum() == 277
    assert set(got.source["files_sha256"]) == {"twitter_training.csv", "twitter_validation.csv"}
    assert len(texts.from_data(twitter_data, LABELS, max_texts=10)) == 10


def test_clean_test_split_of_the_fixture_data(entity_data: Path) -> None:
    """The gate's texts are the validation file's Negative/Positive rows."""
    got = texts.from_data(entity_data, LABELS)
    assert len(got) == ENTITY_VALIDATION["Positive"] + ENTITY_VALIDATION["Negative"]
    assert got.labels.sum() == ENTITY_VALIDATION[LABELS[1]]
    assert set(got.source["files_sha256"]) == {"twitter_training.csv", "twitter_validation.csv"}
    assert len(texts.from_data(entity_data, LABELS, max_texts=10)) == 10


def test_pairs_truncate_the_text_and_keep_the_entity(tiny_checkpoint: Path) -> None:
    rows = texts.Texts(
        texts=["love this game " * 20], entities=["Borderlands"], labels=np.array([1])
    )
    tokenizer = tiny_checkpoint / "tokenizer.json"
    single = texts.encode(tokenizer, rows, max_length=16, text_pair=False)[0]
    pair = texts.encode(tokenizer, rows, max_length=16, text_pair=True)[0]
    assert len(single) == len(pair) == 16
    entity_ids = texts.encode(
        tokenizer, texts.Texts(["Borderlands"], [""], np.array([1])), max_length=16, text_pair=False
    )[0]
    assert pair[: len(entity_ids)].tolist() == entity_ids.tolist()  # [CLS] entity [SEP] kept whole


def test_every_int8_batching_is_held_to_the_criteria_and_batch1_is_reported() -> None:
    y = np.array([0, 1] * 100)
    fp32 = logits_for(list(y))
    flipped = list(y)
    flipped[:4] = [1 - v for v in flipped[:4]]
    report = gate(
        tf_logits=fp32,
        fp32_stages={"fused": fp32},
        int8_runs={"batch1": fp32, "batch32": logits_for(flipped)},
        labels=y,
        thresholds=Thresholds(),
    )
    assert [f.split(")")[0] for f in report.failures[:2]] == ["int8 (batch32", "int8 (batch32"]
    assert report.failures[2].startswith("int8 answers depend on batch-mates")
    assert report.metrics["int8"]["accuracy"] == 1.0  # the headline is the first run
    assert report.metrics["parity"]["label_agreement_int8_fp32"] == 0.98  # the worst run


# Text 7 is Positive with logits [0, 0.5]; batched, its Negative logit moves by `shift`:
# P(Positive) goes from sigmoid(0.5) to sigmoid(0.5 - shift), by 0.2350 x shift.
DRIFTS = [(0.0, 0.0, False), (2e-5, 4.7001e-6, False), (1e-3, 2.3503e-4, True)]


@pytest.mark.parametrize(("shift", "drift", "refused"), DRIFTS)
def test_gate_refuses_a_batch_dependent_graph(shift: float, drift: float, refused: bool) -> None:
    """Same labels everywhere, only the probabilities of a batched text move: a logit shift of
    1e-3 moves a probability by ~2e-4 (refused), 2e-5 by ~5e-6 (within 1e-5)."""
    y = np.array([0, 1] * 50)
    alone = logits_for(list(y), margin=0.5)
    batched = alone.copy()
    batched[7, 0] += shift
    report = gate(
        tf_logits=alone,
        fp32_stages={"fused": alone},
        int8_runs={"batch1": alone, "batch32": batched},
        labels=y,
        thresholds=Thresholds(),
    )
    # float32 probabilities near 0.6 are good to ~6e-8
    assert report.metrics["parity"]["int8_batch_drift"] == pytest.approx(drift, abs=2e-7)
    assert (not report.passed) is refused
    assert any("batch-mates" in f for f in report.failures) is refused
