"""`python -m benchmarks.sources_table`: every shipped bundle x every source's test split, as served.

Each bundle runs through `service.engine.Engine` one text per run (as the service runs dynamic
int8), on the test splits of the multi-source protocol (training.corpus, same seed and fractions
as `make train-3class`). Three figures per cell: accuracy, macro-F1 and macro-averaged recall
(SemEval-2017 / TweetEval's metric). A 3-class bundle is also read as binary on each source's
Negative/Positive tweets (its Negative/Positive probabilities renormalised, as its binary view
answers). Every cell carries the expected calibration error (15 bins, top label); a training
run's TF checkpoint rows show it before → after the run's temperature. The TF-IDF + linear
baselines come from the training runs' metrics.json (same training data, each test scored once).

    python -m benchmarks.sources_table --bundle models/sentiment-3class \
        --bundle models/sentiment-binary --data ../shared/data --metrics reports/3class/metrics.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import load_bundle
from service.engine import Engine, project, view_columns
from training.calibration import expected_calibration_error
from training.corpus import build_corpus
from training.data import Row
from training.evaluate import classification_metrics
from training.sources import DEFAULT_SOURCES, TWITTER_ENTITY, parse_sources

CLASSES = ("Negative", "Neutral", "Positive")
BINARY = ("Negative", "Positive")


def probabilities(engine: Engine, rows: Sequence[Row], with_entity: bool) -> np.ndarray:
    texts = [r.text for r in rows]
    entities = [r.entity for r in rows] if with_entity else None
    return np.stack([engine.infer([enc.ids])[0] for enc in engine.encode(texts, entities)])


def score_rows(engine: Engine, rows: Sequence[Row], with_entity: bool) -> dict[str, Any]:
    """3-class figures where the bundle has the classes; binary figures on Neg/Pos tweets (one
    engine run per text, shared by both views)."""
    labels = list(engine.labels)
    three = set(CLASSES) <= set(labels)
    scored = list(rows) if three else [r for r in rows if r.label in BINARY]
    if not scored:
        return {}
    probs = probabilities(engine, scored, with_entity)
    out: dict[str, Any] = {}
    if three:
        truth = np.array([labels.index(r.label) for r in scored])
        out["3class"] = classification_metrics(truth, probs.argmax(1), labels)
        out["3class"]["ece"] = expected_calibration_error(probs, truth)
    polar = np.array([r.label in BINARY for r in scored])
    if polar.any():
        pair = project(probs[polar], view_columns(labels, BINARY))  # the binary view, as served
        truth = np.array([BINARY.index(r.label) for r, p in zip(scored, polar, strict=True) if p])
        out["binary"] = classification_metrics(truth, pair.argmax(1), list(BINARY))
        out["binary"]["ece"] = expected_calibration_error(pair, truth)
    return out


def evaluate(bundles: Sequence[Path], data: Path, sources: Sequence[str]) -> dict[str, Any]:
    corpus = build_corpus(data, list(sources), CLASSES)
    result: dict[str, Any] = {
        "protocol": "training.corpus test splits (seed 13), one text per engine run",
        "test_sizes": {name: len(rows) for name, rows in corpus.tests.items()},
        "bundles": {},
    }
    for path in bundles:
        engine = Engine(load_bundle(path), threads=1)
        cells = {}
        for name, rows in corpus.tests.items():
            cells[name] = score_rows(engine, rows, engine.text_pair and name == TWITTER_ENTITY)
            if engine.text_pair and name == TWITTER_ENTITY:
                cells[name + " (text only)"] = score_rows(engine, rows, False)
        result["bundles"][path.name] = {"labels": list(engine.labels), "tests": cells}
    return result


def from_runs(metrics_files: Sequence[Path]) -> dict[str, Any]:
    """Per-source test figures of training runs (their TF checkpoint and their TF-IDF + LinearSVC
    baseline), from each run's metrics.json: scored there, once."""
    out: dict[str, Any] = {"checkpoints": {}, "baselines": {}}
    for path in metrics_files:
        metrics = json.loads(path.read_text())
        for kind, tests in (
            ("checkpoints", metrics.get("test") or {}),
            ("baselines", metrics.get("baselines", {}).get("tfidf_svm", {}).get("test", {})),
        ):
            if "n" in tests:  # a single-source run: one test report
                tests = {TWITTER_ENTITY: tests}
            out[kind][path.parent.name] = {"labels": metrics["labels"], "tests": tests}
    return out


def _macro_recall(m: dict[str, Any]) -> float:
    """Older reports carry per-class recall only."""
    if "macro_recall" in m:
        return float(m["macro_recall"])
    return float(np.mean([c["recall"] for c in m["per_class"].values()]))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| model | test split | n | accuracy | macro-F1 | macro recall | ECE |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(model: str, split: str, m: dict[str, Any]) -> None:
        ece = f"{m['ece']:.4f}" if "ece" in m else "-"
        if "ece_uncalibrated" in m:
            ece = f"{m['ece_uncalibrated']:.4f} → {ece}"
        lines.append(
            f"| {model} | {split} | {m['n']:,} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} "
            f"| {_macro_recall(m):.4f} | {ece} |"
        )

    for name, bundle in result["bundles"].items():
        for split, cell in bundle["tests"].items():
            for view, m in cell.items():
                row(f"**{name}** int8 as served ({view})", split, m)
    for name, run in result.get("checkpoints", {}).items():
        for split, m in run["tests"].items():
            row(f"{name} TF checkpoint ({len(run['labels'])} classes)", split, m)
    for name, base in result.get("baselines", {}).items():
        for split, m in base["tests"].items():
            row(f"TF-IDF + LinearSVC ({name} run, {len(base['labels'])} classes)", split, m)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sources_table", description=__doc__)
    p.add_argument("--bundle", type=Path, action="append", required=True)
    p.add_argument("--data", type=Path, required=True, help="the folder holding the sources")
    p.add_argument(
        "--sources", default="default", help=f"or 'default': {','.join(DEFAULT_SOURCES)}"
    )
    p.add_argument("--metrics", type=Path, action="append", default=[], help="runs' metrics.json")
    p.add_argument("--out", type=Path, help="write <out>.json and <out>.md")
    args = p.parse_args(argv)
    result = evaluate(args.bundle, args.data, parse_sources(args.sources))
    result.update(from_runs(args.metrics))
    table = markdown(result)
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
