"""Fine-tuning TFDistilBertForSequenceClassification with a plain, seeded TF loop.

A custom loop (rather than `model.fit`) keeps one traced graph for every batch shape, and lets
model choice happen on dev only: the best epoch's weights are kept, by dev macro-F1.
With `soup > 1` several runs that differ only in data order and dropout (one shared head init,
so their weights stay in one basin) are averaged into one model: an ensemble's variance
reduction at the inference cost of a single model (Wortsman et al., "Model soups", 2022).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.batching import Encoded, batch_indices, encode, pad
from training.calibration import expected_calibration_error, softmax
from training.checkpoint import CheckpointInfo
from training.data import Row
from training.evaluate import classification_metrics, cross_entropy, predict_logits
from training.teacher import distill_targets, read_soft_labels

log = logging.getLogger("training")


@dataclass(frozen=True)
class TrainConfig:
    labels: tuple[str, ...] = ("Negative", "Positive")
    base_model: str = "minilm"
    # The shipped model's recipe (reports/experiments.md: a dev-only search); `make train`
    # reproduces it. The schedule decays to 0 within `epochs`.
    epochs: int = 2
    learning_rate: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    seed: int = 13
    dev_fraction: float = 0.1
    text_pair: bool = True  # "[CLS] entity [SEP] text [SEP]": the labels are toward the entity
    soup: int = 3  # average this many runs (data-order seeds seed, seed+1, ...); 1 = one run
    preprocess: str | None = None  # a service.preprocess name (e.g. "tweet-1"); None: raw text
    # Loss weight per source name (others 1), rescaled to mean 1 over the training rows so the
    # step size stays the unweighted recipe's: a source's share of the gradient, not of the time.
    source_weights: dict[str, float] = field(default_factory=dict)
    # Distillation (training.teacher): a teacher run's soft labels for these training rows, and
    # the share of each row's target they take (the rest is the row's own label).
    teacher_labels: str | None = None
    distill_weight: float = 0.5

    def checkpoint_info(self) -> CheckpointInfo:
        """How this config fed the model: the facts export and the service must not guess."""
        return CheckpointInfo(
            list(self.labels), self.max_length, self.base_model, self.text_pair, self.preprocess
        )


@dataclass
class History:
    step_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0  # 0 for a soup: each member has its own (see `members`)
    seconds: float = 0.0
    members: list[dict[str, Any]] = field(default_factory=list)


def set_seed(seed: int) -> None:
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def load_model(base_model: str, labels: Sequence[str]) -> tuple[Any, Any]:
    """A classifier head on the base encoder (random head, seeded), and its tokenizer."""
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    from training.base_model import head_labels, resolve_base_model

    path = resolve_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = TFAutoModelForSequenceClassification.from_pretrained(
        path, **head_labels(labels), ignore_mismatched_sizes=True
    )
    return model, tokenizer


def fine_tune(
    config: TrainConfig, train_rows: Sequence[Row], dev_rows: Sequence[Row], progress: bool = True
) -> tuple[Any, Any, History]:
    """One fine-tuned model, or the uniform weight average of `config.soup` runs."""
    soft = teacher_probs(config, train_rows)  # read once for every member
    if config.soup <= 1:
        return _fine_tune_one(config, config.seed, train_rows, dev_rows, progress, soft)
    started = time.perf_counter()
    soup = History()
    weights: list[list[np.ndarray]] = []
    model: Any = None
    tokenizer: Any = None
    for seed in range(config.seed, config.seed + config.soup):
        log.info("soup member %d/%d (data-order seed %d)", len(weights) + 1, config.soup, seed)
        model, tokenizer, member = _fine_tune_one(
            config, seed, train_rows, dev_rows, progress, soft
        )
        weights.append(model.get_weights())
        soup.step_loss.extend(member.step_loss)
        soup.epochs.extend({"member_seed": seed, **e} for e in member.epochs)
        best = member.epochs[member.best_epoch - 1]
        soup.members.append({"seed": seed, "best_epoch": member.best_epoch, **best})
    model.set_weights([np.mean(layer, axis=0) for layer in zip(*weights, strict=True)])
    soup.seconds = time.perf_counter() - started
    return model, tokenizer, soup


def _fine_tune_one(
    config: TrainConfig,
    seed: int,
    train_rows: Sequence[Row],
    dev_rows: Sequence[Row],
    progress: bool,
    soft: np.ndarray | None = None,
) -> tuple[Any, Any, History]:
    """One run, `seed` its data order and dropout, `soft` a teacher's probabilities per row; the
    best epoch by dev macro-F1 is kept, and `config.patience` epochs without a better one end it."""
    model, tokenizer = _seeded_model(config, seed)
    pad_id = tokenizer.pad_token_id or 0
    train = encode_rows(tokenizer, train_rows, config)
    dev = encode_rows(tokenizer, dev_rows, config)
    lengths = [len(x) for x in train.ids]
    weights = row_weights(train_rows, config.source_weights)
    targets = distill_targets(train.labels, soft, config.distill_weight, len(config.labels))
    train_step = make_train_step(model, config, math.ceil(len(train) / config.batch_size))
    rng = np.random.default_rng(seed)
    history = History()
    best_f1, best_weights, stale = -1.0, None, 0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        batches = batch_indices(lengths, config.batch_size, rng)
        desc = f"epoch {epoch}/{config.epochs}"
        losses = train_batches(train_step, train, targets, weights, batches, pad_id, desc, progress)
        history.step_loss.extend(losses)
        report = evaluate_split(model, dev, config.labels, pad_id)
        history.epochs.append(_epoch_record(epoch, losses, report, started))
        if report["macro_f1"] > best_f1:
            best_f1, best_weights, stale = report["macro_f1"], model.get_weights(), 0
            history.best_epoch = epoch
        else:
            stale += 1
            if stale >= config.patience:
                log.info("dev macro-F1 stopped improving: early stop after epoch %d", epoch)
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    history.seconds = time.perf_counter() - started
    return model, tokenizer, history


def row_weights(rows: Sequence[Row], source_weights: dict[str, float]) -> np.ndarray:
    """Each training row's loss weight: its source's, rescaled so the rows average 1."""
    weights = np.array([source_weights.get(r.source, 1.0) for r in rows], dtype=np.float32)
    if len(weights) and weights.min() <= 0:
        raise ValueError("source weights must be positive")
    return weights / weights.mean() if len(weights) else weights


def teacher_probs(config: TrainConfig, rows: Sequence[Row]) -> np.ndarray | None:
    """The teacher's probabilities for the training rows, when the config names a teacher."""
    if not config.teacher_labels:
        return None
    return read_soft_labels(Path(config.teacher_labels), rows, config.labels)


def _seeded_model(config: TrainConfig, seed: int) -> tuple[Any, Any]:
    """The model with its head drawn from `config.seed`, shared by every soup member (so their
    weights stay in one basin), then the RNGs reseeded with `seed` for data order and dropout."""
    set_seed(config.seed)
    model, tokenizer = load_model(config.base_model, config.labels)
    if seed != config.seed:
        set_seed(seed)
    return model, tokenizer


def encode_rows(tokenizer: Any, rows: Sequence[Row], config: TrainConfig) -> Encoded:
    """Token ids as the config feeds the model: its length, entity pairing and normalisation."""
    return encode(
        tokenizer, rows, config.labels, config.max_length, config.text_pair, config.preprocess
    )


def make_train_step(
    model: Any, config: TrainConfig, steps_per_epoch: int, loss_of: Any = None
) -> Any:
    """One traced AdamW step for every batch shape, on a warmup-then-linear-decay schedule that
    reaches 0 at the end of `config.epochs`; `loss_of(ids, mask, y, weight)` replaces the
    cross-entropy of one forward pass (training.qat)."""
    import tensorflow as tf
    from transformers import create_optimizer

    total = steps_per_epoch * config.epochs
    optimizer, _ = create_optimizer(
        init_lr=config.learning_rate,
        num_train_steps=total,
        num_warmup_steps=int(total * config.warmup_ratio),
        weight_decay_rate=config.weight_decay,
    )
    # Soft targets: a one-hot label gives exactly the sparse cross-entropy.
    loss_fn = tf.keras.losses.CategoricalCrossentropy(from_logits=True)
    spec = tf.TensorSpec([None, None], tf.int32)
    targets = tf.TensorSpec([None, len(config.labels)], tf.float32)

    @tf.function(input_signature=[spec, spec, targets, tf.TensorSpec([None], tf.float32)])
    def train_step(input_ids: Any, mask: Any, y: Any, weight: Any) -> Any:
        with tf.GradientTape() as tape:
            if loss_of is not None:
                loss = loss_of(input_ids, mask, y, weight)
            else:
                logits = model(input_ids=input_ids, attention_mask=mask, training=True).logits
                loss = loss_fn(y, logits, sample_weight=weight)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return train_step


def train_batches(
    train_step: Any,
    train: Encoded,
    targets: np.ndarray,
    weights: np.ndarray,
    batches: list[np.ndarray],
    pad_id: int,
    desc: str,
    progress: bool,
) -> list[float]:
    """Each batch padded to its own longest row and stepped; the losses, with a running mean
    on the progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(batches, desc=desc, disable=not progress, mininterval=5)
    losses: list[float] = []
    for idx in bar:
        input_ids, mask = pad([train.ids[i] for i in idx], pad_id)
        losses.append(float(train_step(input_ids, mask, targets[idx], weights[idx])))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return losses


def _epoch_record(
    epoch: int, losses: list[float], dev: dict[str, Any], started: float
) -> dict[str, Any]:
    """The epoch's line in metrics.json and the log."""
    record = {
        "epoch": epoch,
        "train_loss": float(np.mean(losses)),
        "dev_loss": dev["loss"],
        "dev_accuracy": dev["accuracy"],
        "dev_macro_f1": dev["macro_f1"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info(
        "epoch %d: train_loss %.4f dev_loss %.4f dev_acc %.4f dev_f1 %.4f (%.0fs)",
        *record.values(),
    )
    return record


def evaluate_split(
    model: Any, data: Encoded, labels: Sequence[str], pad_id: int = 0
) -> dict[str, Any]:
    return logits_report(predict_logits(model, data, pad_id=pad_id), data.labels, labels)


def logits_report(logits: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The figures reported for a split, from its logits."""
    report = classification_metrics(y, logits.argmax(axis=1), labels)
    report["loss"] = cross_entropy(logits, y)
    report["ece"] = expected_calibration_error(softmax(logits), y)
    return report


def evaluate_rows(
    model: Any, tokenizer: Any, rows: Sequence[Row], config: TrainConfig
) -> dict[str, Any]:
    data = encode_rows(tokenizer, rows, config)
    return evaluate_split(model, data, config.labels, tokenizer.pad_token_id or 0)
