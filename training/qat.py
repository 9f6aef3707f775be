"""Quantization-aware fine-tuning: a few steps under the rounding static int8 will apply.

The export's static int8 (export.static) gives every quantized MatMul's input one uint8 range
per tensor, fixed from the min/max over training tweets, and its weight one symmetric int8
scale per column. A model fine-tuned in fp32 only can sit where that rounding flips near-ties:
the held-out-year students read 96.7-98.2 % label agreement under static int8, where the gate
asks 99 % (reports/experiments.md, seventeenth session). Here the same rounding is put in the
forward pass of every Dense layer, with straight-through gradients (Jacob et al., 2018; Zafrir
et al., "Q8BERT", 2019), and the model is fine-tuned briefly on its own training rows and
targets, so that it moves to weights whose int8 graph answers as its fp32 graph does.

With a smoothing alpha the export's smoothed rung is rounded instead: its per-channel divisors
and per-tensor ranges, computed by the export's own functions (export.static). Not simulated
(smaller than the rounding itself, reports/experiments.md, tenth session): the pair-budgeted
weight codes (weight-only agreement equal to plain 8-bit codes) and the static graph's tanh GELU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from export.int8_choice import STATIC_TEXTS
from export.static import channel_divisors, tensor_ranges
from training.batching import batch_indices
from training.data import Row
from training.teacher import distill_targets
from training.train import (
    TrainConfig,
    encode_rows,
    make_train_step,
    row_weights,
    teacher_probs,
    train_batches,
)

log = logging.getLogger("training")

CALIBRATION_TEXTS = STATIC_TEXTS // 2  # the export calibrates on half, checks on the other
Ranges = dict[str, tuple[float, float]]  # a `dense_layers` key -> its input's [min, max]
Channels = dict[str, tuple[np.ndarray, np.ndarray]]  # the same, per input channel
Divisors = dict[str, np.ndarray]  # per input channel: what smoothing divides the input by


def dense_layers(model: Any) -> dict[str, Any]:
    """Every Dense layer of the model, keyed by its place and name (each block's are named
    alike): the MatMuls static int8 quantizes (attention q/k/v and output, the FFN's two, the
    head's two)."""
    from transformers.modeling_tf_utils import keras

    dense = [m for m in model.submodules if isinstance(m, keras.layers.Dense)]
    return {f"{i}/{layer.name}": layer for i, layer in enumerate(dense)}


@contextlib.contextmanager
def _patched(model: Any, make_call: Any) -> Iterator[dict[str, Any]]:
    """Each Dense layer's `call` replaced by `make_call(name, layer)` for the block's length."""
    layers = dense_layers(model)
    for name, layer in layers.items():
        layer.call = make_call(name, layer)
    try:
        yield layers
    finally:
        for layer in layers.values():
            del layer.call  # back to the class's own


def _dense(layer: Any, x: Any, kernel: Any) -> Any:
    import tensorflow as tf

    # as Dense computes it: an "...i,io->...o" einsum took 45 s and 15 GB a step here
    y = tf.tensordot(x, kernel, [[x.shape.rank - 1], [0]])
    if layer.use_bias:
        y = y + layer.bias
    return layer.activation(y) if layer.activation is not None else y


def channel_ranges(model: Any, rows: Sequence[np.ndarray]) -> Channels:
    """Each Dense input's per-channel [min, max] over `rows` of token ids, one text per run (no
    padding), widened to include 0: what the export's static calibration reads."""
    import tensorflow as tf

    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def observe(name: str, layer: Any) -> Any:
        def call(x: Any) -> Any:
            flat = tf.reshape(x, [-1, x.shape[-1]])
            low, high = seen.get(name, (0.0, 0.0))
            seen[name] = (
                np.minimum(low, tf.reduce_min(flat, axis=0).numpy()),
                np.maximum(high, tf.reduce_max(flat, axis=0).numpy()),
            )
            return _dense(layer, x, layer.kernel)

        return call

    with _patched(model, observe):
        for ids in rows:
            x = np.asarray(ids, np.int32)[None, :]
            model(input_ids=x, attention_mask=np.ones_like(x), training=False)
    return seen


def smoothing(model: Any, channels: Channels, alpha: float) -> tuple[Ranges, Divisors]:
    """The export's smoothed static rung (export.static.smoothing): per input channel j,
    s_j = peak|x_j|^alpha / peak|W_j|^(1 - alpha), with one divisor for the Dense layers that
    read one tensor (q, k, v: the export's fused Attention), and the per-tensor range of x / s."""
    layers = dense_layers(model)
    groups: dict[bytes, list[str]] = {}
    for name, (low, high) in channels.items():  # one input tensor: the same ranges
        groups.setdefault(low.tobytes() + high.tobytes(), []).append(name)
    divisors: Divisors = {}
    for names in groups.values():
        w_peak = np.max([np.abs(layers[n].kernel.numpy()).max(axis=1) for n in names], axis=0)
        s = channel_divisors(*channels[names[0]], w_peak, alpha)
        divisors |= dict.fromkeys(names, s)
    return tensor_ranges(channels, divisors), divisors


@contextlib.contextmanager
def fake_quantized(model: Any, ranges: Ranges, divisors: Divisors | None = None) -> Iterator[None]:
    """Every Dense layer computes with its input rounded to uint8 codes over its range and its
    kernel to symmetric int8 codes per column (straight-through gradients); with `divisors`
    (`smoothing`), the input divided and the kernel's rows multiplied by them first."""
    import tensorflow as tf

    divisors = divisors or {}

    def quantized(name: str, layer: Any) -> Any:
        low, high = ranges[name]
        s = divisors.get(name)

        def call(x: Any) -> Any:
            kernel = layer.kernel if s is None else layer.kernel * s[:, None]
            if s is not None:
                x = x / s
            xq = tf.quantization.fake_quant_with_min_max_args(x, min=low, max=high, num_bits=8)
            peak = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=0), 1e-8))
            wq = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, -peak, peak, num_bits=8, narrow_range=True
            )
            return _dense(layer, xq, wq)

        return call

    with _patched(model, quantized):
        yield


def agreement_loss(
    model: Any, ranges: Ranges, weight: float, divisors: Divisors | None = None
) -> Any:
    """The loss of one step that holds the rounded forward pass to the fp32 one: cross-entropy
    of the rounded logits against the targets, plus `weight` x KL(fp32 || rounded). Plain
    quantization-aware steps leave the two apart (the rounded pass becomes the better one),
    and the export's gate compares int8 with fp32 (reports/experiments.md, nineteenth
    session)."""
    import tensorflow as tf

    cross_entropy = tf.keras.losses.CategoricalCrossentropy(from_logits=True)

    def loss_of(input_ids: Any, mask: Any, y: Any, row_weight: Any) -> Any:
        with fake_quantized(model, ranges, divisors):  # patched while this part is traced
            rounded = model(input_ids=input_ids, attention_mask=mask, training=True).logits
        loss = cross_entropy(y, rounded, sample_weight=row_weight)
        if weight:
            fp32 = model(input_ids=input_ids, attention_mask=mask, training=True).logits
            p = tf.nn.softmax(fp32)
            kl = tf.reduce_sum(p * (tf.nn.log_softmax(fp32) - tf.nn.log_softmax(rounded)), -1)
            loss += weight * tf.reduce_sum(kl * row_weight) / tf.reduce_sum(row_weight)
        return loss

    return loss_of


def quantization_aware(
    model: Any,
    tokenizer: Any,
    config: TrainConfig,
    train_rows: Sequence[Row],
    steps: int,
    learning_rate: float,
    progress: bool = True,
    agreement: float = 0.0,
    smoothing_alpha: float | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` in place for `steps` batches of its training rows (their labels, and
    the teacher's share when the config names one) under static int8's rounding, from ranges
    calibrated on the model as it comes in, and with `agreement` > 0 held to its fp32 pass
    (`agreement_loss`), and with `smoothing_alpha` the export's smoothed rung simulated;
    returns the record for metrics.json."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    train = encode_rows(tokenizer, train_rows, config)
    pick = rng.choice(len(train), size=min(CALIBRATION_TEXTS, len(train)), replace=False)
    channels = channel_ranges(model, [train.ids[i] for i in pick])
    ranges, divisors = tensor_ranges(channels), None
    if smoothing_alpha is not None:
        ranges, divisors = smoothing(model, channels, smoothing_alpha)
    soft = teacher_probs(config, train_rows)
    targets = distill_targets(train.labels, soft, config.distill_weight, len(config.labels))
    weights = row_weights(train_rows, config.source_weights)
    batches = batch_indices([len(x) for x in train.ids], config.batch_size, rng)[:steps]
    schedule = dataclasses.replace(config, learning_rate=learning_rate, epochs=1, warmup_ratio=0.0)
    pad_id = tokenizer.pad_token_id or 0
    loss_of = agreement_loss(model, ranges, agreement, divisors)
    step = make_train_step(model, schedule, len(batches), loss_of)
    losses = train_batches(
        step, train, targets, weights, batches, pad_id, "quantization-aware", progress
    )
    record = {
        "steps": len(batches),
        "learning_rate": learning_rate,
        "agreement_weight": agreement,
        "smoothing_alpha": smoothing_alpha,
        "calibration_texts": len(pick),
        "layers": len(ranges),
        "train_loss": round(float(np.mean(losses)), 5) if losses else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("quantization-aware fine-tuning: %s", record)
    return record
