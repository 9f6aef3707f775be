"""Training on many labelled sources: one model, each source's test split scored once.

The flow is the seed's (fine-tune, choose on dev, score test once, TF-IDF baseline beside it),
on the multi-source protocol of training.corpus, plus a prior correction for macro
recall (training.prior).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.baseline import tfidf_svm_per_source
from training.batching import encode
from training.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    softmax,
)
from training.checkpoint import load_checkpoint, save_checkpoint
from training.corpus import Corpus, build_corpus
from training.data import Row
from training.evaluate import predict_logits
from training.prior import choose_shift, class_prior, fold_into_bias
from training.qat import quantization_aware
from training.report import build_metrics, write_run
from training.sources import (
    DEFAULT_SOURCES,
    FORMATS,
    Source,
    SpecError,
    parse_sources,
    resolve,
    spec_from_toml,
    user_source,
)
from training.teacher import SOFT_LABELS, write_soft_labels
from training.train import History, TrainConfig, fine_tune, logits_report

log = logging.getLogger("training")


def add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many sources (training.corpus protocol)")
    g.add_argument(
        "--sources",
        help=f"comma-separated source names under --data, or 'default' ({','.join(DEFAULT_SOURCES)})",
    )
    g.add_argument(
        "--allow-noncommercial",
        action="store_true",
        help="opt in to the CC BY-NC-SA sets (us_airline, gop_debate): not for shipped bundles",
    )
    g.add_argument("--text-col", help="a user's file: the text column (or JSONL key)")
    g.add_argument("--label-col", help="a user's file: the label column")
    g.add_argument("--id-col", help="a user's file: split key column (default: normalised text)")
    g.add_argument("--entity-col", help="a user's file: entity column")
    g.add_argument("--format", choices=FORMATS, help="a user's file: default from the suffix")
    g.add_argument("--encoding", help="a user's file: default utf-8")
    g.add_argument(
        "--label-map",
        help="a user's file: raw=Class pairs, e.g. 'neg=Negative,0=Neutral,pos=Positive' "
        "(default: the class names, any case)",
    )
    g.add_argument("--drop-labels", help="a user's file: comma-separated raw labels to skip")
    g.add_argument("--test-fraction", type=float, default=0.15, help="sources without a test file")
    g.add_argument("--max-dev", type=int, default=2000, help="at most this many dev rows a source")
    g.add_argument(
        "--source-weights",
        type=source_weights_arg,
        default={},
        metavar="NAME=W,...",
        help="loss weight per source (others 1), e.g. 'semeval2017=2'; rescaled to mean 1, so it "
        "moves a source's share of the gradient, not the training time",
    )
    g.add_argument(
        "--dev-files",
        type=dev_files_arg,
        default={},
        metavar="NAME=FILE[+FILE],...",
        help="a source's dev = these training files, held out whole (e.g. "
        "'semeval2017=twitter-2016test-A.csv': dev drawn the way a later test set is)",
    )
    g.add_argument(
        "--calibration",
        choices=("temperature", "off"),
        default="temperature",
        help="temperature: fold a dev-fitted temperature into the head (training.calibration)",
    )
    g.add_argument(
        "--prior-correction",
        type=prior_correction_arg,
        default="auto",
        metavar="{auto,off,TAU}",
        help="auto: fold a dev-chosen logit shift for macro recall into the head (training.prior); "
        "a number: that tau, chosen elsewhere (the pooled dev's table is still recorded)",
    )


def add_qat_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization-aware fine-tuning (training.qat)")
    g.add_argument(
        "--init-from",
        type=Path,
        metavar="CHECKPOINT",
        help="start from this run's model folder instead of fine-tuning from the base model "
        "(its labels, length, pairing and normalisation must be this run's); the prior "
        "correction and temperature are chosen again on dev, on top of the ones it holds",
    )
    g.add_argument(
        "--qat-steps",
        type=int,
        default=0,
        help="after fine-tuning (or --init-from), this many batches under static int8's rounding",
    )
    g.add_argument(
        "--qat-lr", type=float, default=1e-5, help="their peak learning rate (decays to 0)"
    )
    g.add_argument(
        "--qat-agreement",
        type=float,
        default=0.0,
        metavar="W",
        help="add W x KL(fp32 || rounded) to their loss: the int8 graph held to the fp32 one "
        "(two forward passes a step)",
    )
    g.add_argument(
        "--qat-smoothing",
        type=float,
        default=None,
        metavar="ALPHA",
        help="simulate the export's smoothed static rung (SmoothQuant alpha; the export uses 0.85)",
    )


def add_distill_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distillation (training.teacher)")
    g.add_argument(
        "--write-soft-labels",
        action="store_true",
        help="a teacher run: after calibration, keep its probabilities on the training rows in "
        f"OUT/{SOFT_LABELS} for a student's --teacher",
    )
    g.add_argument(
        "--teacher",
        type=Path,
        help=f"a teacher's run folder: learn from its {SOFT_LABELS} (same sources and split)",
    )
    g.add_argument(
        "--distill-weight",
        type=float,
        default=TrainConfig.distill_weight,
        help="the teacher's share of each training row's target, in [0, 1]",
    )


def prior_correction_arg(text: str) -> str | float:
    """'auto', 'off' or a tau in [0, 2]."""
    if text in ("auto", "off"):
        return text
    try:
        tau = float(text)
    except ValueError:
        tau = -1.0
    if not 0.0 <= tau <= 2.0:
        raise argparse.ArgumentTypeError(f"expected auto, off or a tau in [0, 2], got {text!r}")
    return tau


def split_pairs(text: str) -> list[tuple[str, str]]:
    """'a=1, b=2' -> [('a', '1'), ('b', '2')]; a part without '=' is a ValueError naming it."""
    pairs = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(part)
        pairs.append((name.strip(), value.strip()))
    return pairs


def source_weights_arg(text: str) -> dict[str, float]:
    """'a=2,b=0.5' -> {'a': 2.0, 'b': 0.5}, or a usage error naming the bad pair."""
    return _named(text, "NAME=W with W > 0", _positive)


def dev_files_arg(text: str) -> dict[str, tuple[str, ...]]:
    """'a=x.csv+y.csv,b=z.csv' -> {'a': ('x.csv', 'y.csv'), 'b': ('z.csv',)}."""
    return _named(
        text, "NAME=FILE[+FILE]", lambda v: tuple(filter(None, map(str.strip, v.split("+"))))
    )


def _named(text: str, form: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """NAME=VALUE pairs with a name and a value `convert` accepts (a falsy result is refused)."""
    out: dict[str, Any] = {}
    try:
        pairs = split_pairs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {form}, got {exc.args[0]!r}") from None
    for name, value in pairs:
        converted = convert(value)
        if not name or not converted:
            raise argparse.ArgumentTypeError(f"expected {form}, got {name + '=' + value!r}")
        out[name] = converted
    return out


def _positive(value: str) -> float | None:
    try:
        weight = float(value)
    except ValueError:
        return None
    return weight if weight > 0 and math.isfinite(weight) else None


def is_general(args: argparse.Namespace) -> bool:
    return bool(args.sources) or args.data.is_file()


def sources_from_args(args: argparse.Namespace) -> tuple[Path, list[str | Source]]:
    """The data root and the sources the flags name."""
    if args.sources:
        return args.data, list(resolve(parse_sources(args.sources), args.allow_noncommercial))
    if args.data.suffix.lower() == ".toml":
        return args.data.parent, [spec_from_toml(args.data)]
    if not args.data.is_file():
        raise SpecError(f"{args.data}: no such file")
    if not (args.text_col and args.label_col):
        raise SpecError(f"{args.data}: a data file needs --text-col and --label-col (or a .toml)")
    return args.data.parent, [user_source(args.data, **_user_flags(args))]


def _user_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {
        k: getattr(args, k)
        for k in ("text_col", "label_col", "id_col", "entity_col", "format", "encoding")
    }
    if args.label_map:
        try:
            flags["label_map"] = dict(split_pairs(args.label_map))
        except ValueError:
            raise SpecError(
                f"--label-map: expected raw=Class pairs, got {args.label_map!r}"
            ) from None
    if args.drop_labels:
        flags["drop_labels"] = tuple(x.strip() for x in args.drop_labels.split(","))
    return flags


def run_general(args: argparse.Namespace, config: TrainConfig) -> int:
    started = time.perf_counter()
    root, sources = sources_from_args(args)
    names = [str(getattr(s, "name", s)) for s in sources]
    unknown = sorted(set(config.source_weights) - set(names))
    if unknown:
        raise SpecError(f"--source-weights: no source named {', '.join(unknown)} in this run")
    corpus = build_corpus(
        root, sources, config.labels, seed=config.seed, dev_fraction=config.dev_fraction,
        test_fraction=args.test_fraction, max_dev=args.max_dev, dev_files=args.dev_files,
    )  # fmt: skip
    summary = corpus.summary()
    log.info("data: %s", json.dumps({k: summary[k] for k in ("train", "dev")}))
    for name, part in summary["per_source"].items():
        log.info("source %s: %s", name, json.dumps(part))
    train, dev, tests = _limited(args.limit, corpus)
    model, tokenizer, history = _model(args, config, train, dev)
    qat = None
    if args.qat_steps > 0:
        qat = quantization_aware(
            model, tokenizer, config, train, args.qat_steps, args.qat_lr,
            not args.no_progress, args.qat_agreement, args.qat_smoothing,
        )  # fmt: skip
    dev_data = encode(
        tokenizer, dev, config.labels, config.max_length, config.text_pair, config.preprocess
    )
    logits = predict_logits(model, dev_data, pad_id=tokenizer.pad_token_id or 0)
    prior = None
    if args.prior_correction != "off":
        fixed = args.prior_correction if isinstance(args.prior_correction, float) else None
        shift, prior = _correct_prior(model, train, logits, dev_data.labels, config, fixed)
        logits = logits + shift  # what the model now computes: the shift is in its bias
    temperature, calibration = 1.0, None
    if args.calibration == "temperature":
        temperature = fit_temperature(logits, dev_data.labels)
        fold_temperature(model, temperature)
        calibration = calibration_report(logits, dev_data.labels, temperature)
        calibration["dev_by_source"] = {
            name: calibration_report(logits[at], dev_data.labels[at], temperature)
            for name, at in _positions(dev).items()
        }
        log.info(
            "calibration: %s",
            json.dumps({k: v for k, v in calibration.items() if k != "dev_by_source"}),
        )
        logits = logits / temperature
    dev_report = logits_report(logits, dev_data.labels, config.labels)
    dev_by_source = {
        name: logits_report(logits[at], dev_data.labels[at], config.labels)
        for name, at in _positions(dev).items()
    }
    log.info("dev: accuracy %.4f macro-F1 %.4f macro-recall %.4f (n=%d)",
             dev_report["accuracy"], dev_report["macro_f1"], dev_report["macro_recall"], dev_report["n"])  # fmt: skip
    test = baseline = None
    if not args.dev_only:  # every test split is scored here and by the baseline, nowhere else
        test = _by_source(model, tokenizer, tests, config, temperature)
        for name, report in test.items():
            log.info("TEST %s: accuracy %.4f macro-F1 %.4f macro-recall %.4f (n=%d)",
                     name, report["accuracy"], report["macro_f1"], report["macro_recall"], report["n"])  # fmt: skip
        baseline = tfidf_svm_per_source(train, dev, tests, config.labels)
    if args.write_soft_labels:
        _soft_labels(model, tokenizer, train, config, args.out / SOFT_LABELS)
    save_checkpoint(model, tokenizer, config.checkpoint_info(), args.out / "model")
    metrics = build_metrics(
        config, history, test, dev_report, summary, None, time.perf_counter() - started
    )
    metrics.update(
        dev_by_source=dev_by_source,
        prior_correction=prior,
        calibration=calibration,
        sources=names,
        init_from=str(args.init_from) if args.init_from else None,
        quantization_aware=qat,
    )
    write_run(args.out, metrics, history, baseline)
    log.info("wrote %s", args.out)
    return 0


def _model(
    args: argparse.Namespace, config: TrainConfig, train: list[Row], dev: list[Row]
) -> tuple[Any, Any, History]:
    """Fine-tuned from the base model, or a finished run's model taken as it is."""
    if args.init_from is None:
        return fine_tune(config, train, dev, progress=not args.no_progress)
    try:
        model, tokenizer = load_checkpoint(args.init_from, config.checkpoint_info())
    except (OSError, ValueError) as exc:
        raise SpecError(f"--init-from: {exc}") from exc
    log.info("model: %s as it is (no fine-tuning from the base model)", args.init_from)
    return model, tokenizer, History()


def _soft_labels(
    model: Any, tokenizer: Any, rows: Sequence[Row], config: TrainConfig, path: Path
) -> None:
    """The model's probabilities on the training rows, as it now computes them (calibrated)."""
    data = encode(
        tokenizer, rows, config.labels, config.max_length, config.text_pair, config.preprocess
    )
    probs = softmax(predict_logits(model, data, pad_id=tokenizer.pad_token_id or 0))
    write_soft_labels(path, rows, probs, config.labels)
    agree = float((probs.argmax(axis=1) == data.labels).mean())
    log.info(
        "soft labels: %d training rows, argmax agrees with the label on %.4f", len(rows), agree
    )


def _correct_prior(
    model: Any,
    train: Sequence[Row],
    logits: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    fixed: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Choose the shift on the dev logits (or take `fixed`) and fold it into the model's head."""
    index = {label: i for i, label in enumerate(config.labels)}
    prior = class_prior(np.array([index[r.label] for r in train]), len(config.labels))
    shift, info = choose_shift(logits, y, prior, fixed=fixed)
    fold_into_bias(model, shift)
    log.info(
        "prior correction: tau %.2f (dev macro recall by tau %s)",
        info["tau"],
        info["dev_macro_recall_by_tau"],
    )
    return shift, info


def _by_source(
    model: Any,
    tokenizer: Any,
    groups: dict[str, list[Row]],
    config: TrainConfig,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Each source's report; with a folded temperature, its ECE before (T = 1) and after."""
    out = {}
    for name, rows in groups.items():
        if not rows:
            continue
        data = encode(
            tokenizer, rows, config.labels, config.max_length, config.text_pair, config.preprocess
        )
        logits = predict_logits(model, data, pad_id=tokenizer.pad_token_id or 0)
        out[name] = logits_report(logits, data.labels, config.labels)
        out[name]["ece_uncalibrated"] = expected_calibration_error(
            softmax(logits * temperature), data.labels
        )
    return out


def _positions(rows: Sequence[Row]) -> dict[str, np.ndarray]:
    """Each source's row positions in `rows`."""
    out: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        out[row.source].append(i)
    return {name: np.array(at) for name, at in out.items()}


def _limited(n: int, corpus: Corpus) -> tuple[list[Row], list[Row], dict[str, list[Row]]]:
    """`--limit N` (smoke runs): at most N rows of train and dev, and of each test split."""
    if not n:
        return corpus.train, corpus.dev, corpus.tests
    return corpus.train[:n], corpus.dev[:n], {k: v[:n] for k, v in corpus.tests.items()}
