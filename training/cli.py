"""`python -m training`: fine-tune, evaluate under the clean protocol, write checkpoint + report.

Two data modes: `--data` the Twitter Entity folder (the seed's clean protocol, entity pairs), or
many sources (`--sources`, a data spec `.toml`, or one CSV/TSV/JSONL file with `--text-col` and
`--label-col`), run by training.general under the multi-source protocol of training.corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from training.baseline import tfidf_svm
from training.checkpoint import save_checkpoint
from training.general import (
    add_distill_args,
    add_qat_args,
    add_source_args,
    is_general,
    run_general,
)
from training.protocol import build_splits
from training.reader import DataError
from training.report import LEAKY_NOTE, build_metrics, write_run
from training.sources import SpecError
from training.teacher import SOFT_LABELS, SoftLabelError
from training.train import TrainConfig, evaluate_rows, fine_tune

log = logging.getLogger("training")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the Twitter Entity folder; with --sources the folder holding the sources; "
        "or a CSV/TSV/JSONL file (with --text-col, --label-col) or a data spec .toml",
    )
    add_source_args(p)
    add_distill_args(p)
    add_qat_args(p)
    p.add_argument(
        "--out", type=Path, required=True, help="run folder: model/, metrics.json, curve.png"
    )
    p.add_argument(
        "--labels",
        default=None,
        help="comma-separated label set, in logit order (default: Negative,Positive for the "
        "Twitter Entity folder, Negative,Neutral,Positive for many sources)",
    )
    p.add_argument(
        "--base-model",
        default=d.base_model,
        help="'minilm' (offline, default), 'mpnet' (offline: a distillation teacher, not "
        "exportable), a checkpoint path or hub id",
    )
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dev-fraction", type=float, default=d.dev_fraction)
    p.add_argument(
        "--entity-pair",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="feed the entity as the first segment (default: on for the Twitter Entity folder, "
        "off for many sources)",
    )
    p.add_argument(
        "--preprocess",
        choices=("tweet-1", "none"),
        default="tweet-1",
        help="text normalisation, recorded in the checkpoint and applied by export and the "
        "service (service.preprocess); 'none' reads raw text",
    )
    p.add_argument(
        "--soup",
        type=int,
        default=d.soup,
        help="average the weights of N runs that differ in data order (N times the training time)",
    )
    p.add_argument(
        "--no-leaky",
        action="store_true",
        help="skip the second, leaky run (it doubles training time)",
    )
    p.add_argument(
        "--dev-only",
        action="store_true",
        help="recipe search: score dev only; the test set, the leaky run and the baseline are "
        "skipped (metrics.json says test: null), so no choice can lean on test",
    )
    p.add_argument(
        "--limit", type=int, default=0, help="use at most N train/dev/test rows each (smoke runs)"
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    general = is_general(args)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(args.out / "train.log")],
        force=True,
    )
    labels = args.labels or ("Negative,Neutral,Positive" if general else "Negative,Positive")
    config = TrainConfig(
        labels=tuple(x.strip() for x in labels.split(",") if x.strip()),
        base_model=args.base_model,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        patience=args.patience,
        seed=args.seed,
        dev_fraction=args.dev_fraction,
        text_pair=(not general) if args.entity_pair is None else args.entity_pair,
        soup=args.soup,
        preprocess=None if args.preprocess == "none" else args.preprocess,
        source_weights=args.source_weights,
        teacher_labels=str(args.teacher / SOFT_LABELS) if args.teacher else None,
        distill_weight=args.distill_weight,
    )
    if not 0.0 <= config.distill_weight <= 1.0:
        print("error: --distill-weight must be in [0, 1]", file=sys.stderr)
        return 2
    if config.teacher_labels and not Path(config.teacher_labels).is_file():
        print(f"error: {config.teacher_labels}: no such file (a teacher run's "
              "--write-soft-labels)", file=sys.stderr)  # fmt: skip
        return 2
    if args.qat_steps < 0 or args.qat_lr <= 0 or args.qat_agreement < 0:
        print("error: --qat-steps and --qat-agreement must be >= 0, --qat-lr > 0", file=sys.stderr)
        return 2
    if args.qat_smoothing is not None and not 0.0 < args.qat_smoothing <= 1.0:
        print("error: --qat-smoothing must be in (0, 1]", file=sys.stderr)
        return 2
    for flag, given in (("--source-weights", config.source_weights), ("--teacher", args.teacher),
                        ("--write-soft-labels", args.write_soft_labels),
                        ("--init-from", args.init_from), ("--qat-steps", args.qat_steps)):  # fmt: skip
        if given and not general:
            print(f"error: {flag} needs --sources (or a data file)", file=sys.stderr)
            return 2
    if general:
        try:
            return run_general(args, config)
        except (DataError, SpecError, SoftLabelError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    started = time.perf_counter()
    splits = build_splits(
        args.data, config.labels, seed=config.seed, dev_fraction=config.dev_fraction
    )
    train_rows, dev_rows, test_rows = _limit(args.limit, splits.train, splits.dev, splits.test)
    summary = splits.summary()
    log.info("data: %s", json.dumps({k: summary[k] for k in ("train", "dev", "test")}))
    for report in splits.reports:
        if report.dropped:
            log.warning("%s: dropped rows %s", report.path, dict(report.dropped))

    model, tokenizer, history = fine_tune(
        config, train_rows, dev_rows, progress=not args.no_progress
    )
    dev = evaluate_rows(model, tokenizer, dev_rows, config)
    log.info("dev: accuracy %.4f macro-F1 %.4f (n=%d)", dev["accuracy"], dev["macro_f1"], dev["n"])
    test = baseline = None
    if not args.dev_only:  # the test set is scored here and by the baseline, nowhere else
        test = evaluate_rows(model, tokenizer, test_rows, config)
        log.info(
            "CLEAN test: accuracy %.4f macro-F1 %.4f (n=%d)",
            test["accuracy"],
            test["macro_f1"],
            test["n"],
        )
        baseline = tfidf_svm(train_rows, dev_rows, test_rows, config.labels)
        log.info("baseline %s: test accuracy %.4f", baseline["model"], baseline["test"]["accuracy"])
    save_checkpoint(model, tokenizer, config.checkpoint_info(), args.out / "model")

    leaky = None
    if not (args.no_leaky or args.dev_only):
        leaky = _leaky_run(args, config)
    metrics = build_metrics(
        config, history, test, dev, summary, leaky, time.perf_counter() - started
    )
    write_run(args.out, metrics, history, baseline)
    log.info("wrote %s", args.out)
    return 0


def _leaky_run(args: argparse.Namespace, config: TrainConfig) -> dict[str, object]:
    splits = build_splits(
        args.data, config.labels, seed=config.seed, dev_fraction=config.dev_fraction, leaky=True
    )
    train_rows, dev_rows, test_rows = _limit(args.limit, splits.train, splits.dev, splits.test)
    log.info(
        "LEAKY run: training again with the validation tweet_ids included (%d rows)",
        len(train_rows),
    )
    model, tokenizer, history = fine_tune(
        config, train_rows, dev_rows, progress=not args.no_progress
    )
    test = evaluate_rows(model, tokenizer, test_rows, config)
    log.info("LEAKY test: accuracy %.4f macro-F1 %.4f", test["accuracy"], test["macro_f1"])
    return {
        "note": LEAKY_NOTE,
        "test": test,
        "best_epoch": history.best_epoch,
        "epochs": history.epochs,
        "soup_members": history.members,
    }


def _limit(n: int, *parts: list) -> tuple[list, ...]:
    return tuple(part[:n] if n else part for part in parts)
