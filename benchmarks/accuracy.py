"""`python -m benchmarks.accuracy`: the shipped bundle's accuracy as the service computes it.

The training report scores the TensorFlow checkpoint and the export gate scores the int8 graph
through ONNX Runtime directly; this scores the bundle through `service.engine.Engine` (its
tokenizer, truncation and padding, one text per run as the service runs dynamic int8), on the
clean protocol's dev and test tweets. Entity-pair bundles are also scored without the entity,
which is what a client that sends none gets.

Example (what `make accuracy` runs):
    python -m benchmarks.accuracy --bundle models/sentiment-binary --data ../shared/data/twitter_entity
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import load_bundle
from service.engine import Engine
from training.data import Row
from training.evaluate import classification_metrics
from training.protocol import build_splits


def score(engine: Engine, rows: Sequence[Row], with_entity: bool) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class figures and confusion matrix, one text per engine run."""
    labels = list(engine.labels)
    texts = [row.text for row in rows]
    entities = [row.entity for row in rows] if with_entity else None
    encoded = engine.encode(texts, entities)
    predicted = np.array([int(engine.infer([enc.ids]).argmax()) for enc in encoded])
    truth = np.array([labels.index(row.label) for row in rows])
    return classification_metrics(truth, predicted, labels)


def evaluate_bundle(bundle_dir: Path, data: Path, threads: int = 1) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    engine = Engine(bundle, threads=threads)
    # The split's seed and dev fraction are the training defaults, as in `make train`.
    splits = build_splits(data, engine.labels)
    modes = {"with entity": True, "text only": False} if engine.text_pair else {"text only": False}
    result: dict[str, Any] = {"bundle": str(bundle_dir), "labels": list(engine.labels)}
    for split, rows in (("dev", splits.dev), ("test", splits.test)):
        result[split] = {mode: score(engine, rows, entity) for mode, entity in modes.items()}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    p.add_argument("--bundle", type=Path, default=Path("models/sentiment-binary"))
    p.add_argument("--data", type=Path, required=True, help="the data folder (Kaggle's CSVs)")
    p.add_argument("--out", type=Path, help="also write the full report (JSON) here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    result = evaluate_bundle(args.bundle, args.data, args.threads)
    for split in ("dev", "test"):
        for mode, figures in result[split].items():
            print(
                f"{split:4} {mode:11}  n {figures['n']:4}  accuracy {figures['accuracy']:.4f}"
                f"  macro-F1 {figures['macro_f1']:.4f}"
            )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
