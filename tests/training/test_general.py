"""`python -m training` on many sources and on a user's own file (tiny model, tiny data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NEGATIVE, POSITIVE
from tests.training.source_fixtures import write_source_root
from training.cli import main

TINY = ["--epochs", "12", "--patience", "12", "--lr", "3e-3", "--batch-size", "8",
        "--warmup-ratio", "0", "--max-length", "32", "--soup", "1", "--no-progress"]  # fmt: skip


def write_user_file(path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet", "mood"])
        for i in range(180):
            mood = ("neg", "neutral", "pos")[i % 3]
            if mood == "neutral":
                text = f"it is a game #{i % 7} #{(i // 7) % 7}"
            else:
                pool = NEGATIVE if mood == "neg" else POSITIVE
                text = f"{pool[i % 5]} {pool[(i // 5) % 5]} #{i % 7}"
            writer.writerow([text, mood])
        writer.writerow(["   ", "pos"])  # counted, not fatal
    return path


@pytest.mark.slow
def test_user_csv_trains_three_classes(tmp_path: Path, tiny_base: Path) -> None:
    data = write_user_file(tmp_path / "mine.csv")
    out = tmp_path / "run"
    code = main(
        ["--data", str(data), "--text-col", "tweet", "--label-col", "mood", "--label-map",
         "neg=Negative,neutral=Neutral,pos=Positive", "--out", str(out), "--base-model", str(tiny_base),
         "--prior-correction", "0.5", *TINY]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["Negative", "Neutral", "Positive"]
    test = metrics["test"]["mine"]
    assert test["n"] == metrics["data"]["per_source"]["mine"]["test"]["rows"] >= 20  # ~15 %
    assert test["macro_recall"] >= 0.6  # chance: 0.33
    assert set(metrics["baselines"]["tfidf_svm"]["test"]) == {"mine"}
    correction = metrics["prior_correction"]  # imposed, with the dev's own table beside it
    assert correction["tau"] == 0.5 and correction["rule"].startswith("fixed")
    assert set(correction["dev_macro_recall_by_tau"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    assert metrics["data"]["load_reports"][0]["dropped"] == {"empty text": 1}
    info = json.loads((out / "model" / "sentiment.json").read_text())
    assert info["labels"] == ["Negative", "Neutral", "Positive"] and info["text_pair"] is False


@pytest.mark.slow
def test_sources_dev_only_never_scores_a_test_split(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.general as general

    root = write_source_root(tmp_path / "data")
    seen: list[str] = []  # every text scored after training (dev and tests) is encoded here
    real_encode = general.encode

    def spy_encode(tokenizer, rows, *args):  # type: ignore[no-untyped-def]
        seen.extend(r.text for r in rows)
        return real_encode(tokenizer, rows, *args)

    monkeypatch.setattr(general, "encode", spy_encode)
    out = tmp_path / "run"
    args = ["--data", str(root), "--sources", "semeval2017,apple", "--out", str(out),
            "--base-model", str(tiny_base), "--dev-only", "--source-weights", "apple=3",
            *TINY[:1], "1", *TINY[2:]]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"] is None and set(metrics["dev_by_source"]) == {"semeval2017", "apple"}
    assert metrics["config"]["source_weights"] == {"apple": 3.0}  # the recipe is on record
    assert seen and not any("test" in text for text in seen)  # fixture test texts say "test"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text-col", "tweet", "--label-col", "mood"], "mine.csv:3: column 'mood': unknown label 'meh'"),
        (["--text-col", "tweet"], "needs --text-col and --label-col"),
        (["--text-col", "body", "--label-col", "mood"], "mine.csv:1: no column 'body'"),
    ],
)  # fmt: skip
def test_bad_user_files_end_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    data = tmp_path / "mine.csv"
    data.write_text("tweet,mood\ngood,positive\nhm,meh\n")
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


WEIGHTS, DEV_FILES = "expected NAME=W with W > 0", "expected NAME=FILE[+FILE]"


@pytest.mark.parametrize(
    ("flag", "spec", "message"),
    [
        *[("--source-weights", spec, WEIGHTS) for spec in ("apple=0", "apple", "apple=-1", "=2", "apple=inf")],
        *[("--dev-files", spec, DEV_FILES) for spec in ("semeval2017", "semeval2017=", "=a.csv", "semeval2017=+")],
        *[("--prior-correction", spec, "expected auto, off or a tau in [0, 2]") for spec in ("-0.5", "3", "on", "nan")],
    ],
)  # fmt: skip
def test_bad_recipe_knobs_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, spec: str, message: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(tmp_path), "--sources", "apple", "--out", str(tmp_path / "run"),
              flag, spec])  # fmt: skip
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err


def test_a_weight_for_a_source_not_in_the_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_source_root(tmp_path / "data")
    args = ["--data", str(root), "--sources", "apple", "--out", str(tmp_path / "run"),
            "--source-weights", "semeval2017=2"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--source-weights: no source named semeval2017" in err and err.count("\n") == 1


def test_noncommercial_sources_need_the_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--data", str(tmp_path), "--sources", "gop_debate", "--out", str(tmp_path / "run")]
    )
    assert code == 2 and "--allow-noncommercial" in capsys.readouterr().err


@pytest.mark.slow
def test_a_student_learns_from_its_teachers_soft_labels(tmp_path: Path, tiny_base: Path) -> None:
    root = write_source_root(tmp_path / "data")
    common = ["--data", str(root), "--base-model", str(tiny_base), "--dev-only",
              *TINY[:1], "2", *TINY[2:]]  # fmt: skip
    teacher_run = tmp_path / "teacher"
    args = [*common, "--sources", "semeval2017,apple", "--out", str(teacher_run)]
    assert main([*args, "--write-soft-labels", "--prior-correction", "off"]) == 0
    with np.load(teacher_run / "soft-labels.npz") as soft:
        train_rows = json.loads((teacher_run / "metrics.json").read_text())["data"]["train"]
        assert soft["probs"].shape == (train_rows["rows"], 3)
        np.testing.assert_allclose(soft["probs"].sum(axis=1), 1.0, rtol=1e-5)

    student = tmp_path / "student"
    args = [*common, "--sources", "semeval2017,apple", "--out", str(student)]
    assert main([*args, "--teacher", str(teacher_run), "--distill-weight", "0.7"]) == 0
    config = json.loads((student / "metrics.json").read_text())["config"]
    assert config["teacher_labels"] == str(teacher_run / "soft-labels.npz")
    assert config["distill_weight"] == 0.7


def test_a_teacher_from_another_split_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.data import Row
    from training.teacher import write_soft_labels

    root = write_source_root(tmp_path / "data")
    teacher_run = tmp_path / "teacher"
    teacher_run.mkdir()
    other = [Row(1, "", "Neutral", "a tweet from elsewhere", "sanders")]
    labels = ("Negative", "Neutral", "Positive")
    write_soft_labels(teacher_run / "soft-labels.npz", other, np.full((1, 3), 1 / 3), labels)
    args = ["--data", str(root), "--sources", "apple", "--out", str(tmp_path / "run"),
            "--teacher", str(teacher_run), "--limit", "4"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no soft label for 4 of 4 training rows" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "nowhere"], "nowhere/soft-labels.npz: no such file"),
        (["--distill-weight", "1.5"], "--distill-weight must be in [0, 1]"),
    ],
)
def test_bad_distillation_flags_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(
        ["--data", str(tmp_path), "--sources", "apple", "--out", str(tmp_path / "r"), *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
