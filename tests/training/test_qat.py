"""Quantization-aware fine-tuning: the rounding it simulates, and `--init-from` / `--qat-steps`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.static import tensor_ranges
from tests.training.source_fixtures import write_source_root
from tests.training.test_general import TINY
from training.cli import main
from training.qat import (
    channel_ranges,
    dense_layers,
    fake_quantized,
    smoothing,
)


def one_dense(seed: int = 0) -> tuple[object, np.ndarray, np.ndarray]:
    """A model of one Dense layer (ReLU) with drawn weights, and its kernel and bias."""
    from transformers.modeling_tf_utils import keras

    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu")])
    kernel = rng.normal(0, 1, (6, 4)).astype(np.float32)
    bias = rng.normal(0, 0.1, 4).astype(np.float32)
    model.layers[0].set_weights([kernel, bias])
    return model, kernel, bias


def test_the_forward_pass_rounds_as_static_int8_does() -> None:
    model, kernel, bias = one_dense()
    x = np.random.default_rng(1).uniform(-1.0, 3.0, (5, 6)).astype(np.float32)
    (name,) = dense_layers(model)
    low, high = -1.0, 3.0
    with fake_quantized(model, {name: (low, high)}):
        got = np.asarray(model(x))
    # The export's codes: uint8 over [low, high] with an exact zero; int8 +-127 per column.
    scale = (high - low) / 255
    zero = round(-low / scale)
    xq = (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale
    w_scale = np.abs(kernel).max(axis=0) / 127
    wq = np.round(kernel / w_scale) * w_scale
    want = np.maximum(xq @ wq + bias, 0.0)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got - np.maximum(x @ kernel + bias, 0.0)).max() > 1e-3  # it did round
    np.testing.assert_allclose(np.asarray(model(x)), np.maximum(x @ kernel + bias, 0), atol=1e-5)


def test_the_smoothed_rung_divides_inputs_and_multiplies_weight_rows() -> None:
    model, kernel, bias = one_dense()
    x = np.random.default_rng(2).uniform(-1.0, 3.0, (50, 6)).astype(np.float32)
    x[:, 2] *= 20  # an outlier channel: what smoothing is for
    (name,) = dense_layers(model)
    channels = {name: (np.minimum(0, x.min(axis=0)), np.maximum(0, x.max(axis=0)))}
    ranges, divisors = smoothing(model, channels, 0.85)
    s = divisors[name]
    want_s = np.abs(x).max(axis=0) ** 0.85 / np.abs(kernel).max(axis=1) ** 0.15
    np.testing.assert_allclose(s, want_s, rtol=1e-5)
    with fake_quantized(model, ranges, divisors):
        got = np.asarray(model(x))
    low, high = ranges[name]
    scale = (high - low) / 255
    zero = round(-low / scale)
    xs = x / s
    xq = (np.clip(np.round(xs / scale) + zero, 0, 255) - zero) * scale
    ws = kernel * s[:, None]
    w_scale = np.abs(ws).max(axis=0) / 127
    want = np.maximum(xq @ (np.round(ws / w_scale) * w_scale) + bias, 0.0)
    np.testing.assert_allclose(got, want, atol=1e-3)
    plain = tensor_ranges(channels)
    with fake_quantized(model, plain):
        unsmoothed = np.asarray(model(x))
    exact = np.maximum(x @ kernel + bias, 0.0)
    assert np.abs(got - exact).mean() < np.abs(unsmoothed - exact).mean()  # it helps here


def test_gradients_pass_straight_through_the_rounding() -> None:
    import tensorflow as tf

    model, _, _ = one_dense()
    (name,) = dense_layers(model)
    x = tf.constant(np.full((2, 6), 0.5, np.float32))
    with fake_quantized(model, {name: (-1.0, 1.0)}), tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_calibration_reads_every_dense_input_with_zero_inside(tiny_checkpoint: Path) -> None:
    from transformers import TFAutoModelForSequenceClassification

    model = TFAutoModelForSequenceClassification.from_pretrained(tiny_checkpoint)
    rows = [np.array([2, 7, 9, 11, 3]), np.array([2, 5, 3])]
    before = model(input_ids=rows[0][None], training=False).logits.numpy()
    ranges = tensor_ranges(channel_ranges(model, rows))
    # 2 blocks x (q, k, v, out, lin1, lin2) + the head's two
    assert len(ranges) == len(dense_layers(model)) == 14
    assert all(low <= 0.0 <= high and high > low for low, high in ranges.values())
    after = model(input_ids=rows[0][None], training=False).logits.numpy()
    np.testing.assert_array_equal(before, after)  # the layers are themselves again
    _, divisors = smoothing(model, channel_ranges(model, rows), 0.85)
    by_name: dict[str, list[np.ndarray]] = {}
    for key, divisor in divisors.items():
        by_name.setdefault(key.split("/")[1], []).append(divisor)
    for q, k, v in zip(by_name["q_lin"], by_name["k_lin"], by_name["v_lin"], strict=True):
        assert np.array_equal(q, k) and np.array_equal(q, v)  # one tensor: one divisor (Attention)
    assert not np.array_equal(by_name["lin1"][0], by_name["lin2"][0])


def test_the_agreement_term_is_the_kl_from_fp32_to_the_rounded_pass(tiny_checkpoint: Path) -> None:
    import tensorflow as tf
    from transformers import TFAutoModelForSequenceClassification

    from training.qat import agreement_loss

    model = TFAutoModelForSequenceClassification.from_pretrained(tiny_checkpoint)
    rows = [np.array([2, 7, 9, 11, 3]), np.array([2, 5, 6, 8, 3])]
    exact = tensor_ranges(channel_ranges(model, rows))
    ranges = {k: (lo / 4, hi / 4) for k, (lo, hi) in exact.items()}  # coarse
    ids = tf.constant(np.stack(rows).astype(np.int32))
    mask, y, w = tf.ones_like(ids), tf.constant(np.eye(2, dtype=np.float32)), tf.ones(2)
    tf.random.set_seed(0)
    plain = float(agreement_loss(model, ranges, 0.0)(ids, mask, y, w))
    tf.random.set_seed(0)
    held = float(agreement_loss(model, ranges, 1.0)(ids, mask, y, w))
    assert held > plain  # the same rounded pass (same dropout draw), plus a positive KL
    fp32 = model(input_ids=ids, attention_mask=mask, training=False).logits.numpy()
    with fake_quantized(model, ranges):
        rounded = model(input_ids=ids, attention_mask=mask, training=False).logits.numpy()
    assert np.abs(fp32 - rounded).max() > 1e-3  # the clipped ranges do round
    np.testing.assert_array_equal(fp32, model(input_ids=ids, attention_mask=mask).logits.numpy())


@pytest.mark.slow
def test_a_finished_run_fine_tunes_under_int8_rounding(tmp_path: Path, tiny_base: Path) -> None:
    root = write_source_root(tmp_path / "data")
    common = ["--data", str(root), "--sources", "semeval2017,apple", "--base-model",
              str(tiny_base), "--dev-only", *TINY[:1], "2", *TINY[2:]]  # fmt: skip
    first = tmp_path / "first"
    assert main([*common, "--out", str(first)]) == 0
    second = tmp_path / "second"
    code = main([*common, "--out", str(second), "--init-from", str(first / "model"),
                 "--qat-steps", "3", "--qat-lr", "1e-3", "--qat-agreement", "1",
                 "--qat-smoothing", "0.85"])  # fmt: skip
    assert code == 0
    metrics = json.loads((second / "metrics.json").read_text())
    record = metrics["quantization_aware"]
    assert record["steps"] == 3 and record["layers"] == 14 and record["train_loss"] > 0
    assert record["agreement_weight"] == 1.0 and record["smoothing_alpha"] == 0.85
    assert metrics["init_from"] == str(first / "model") and metrics["epochs"] == []
    import h5py

    def kernel(run: Path) -> np.ndarray:
        with h5py.File(run / "model" / "tf_model.h5") as f:
            names: list[str] = []
            f.visit(names.append)
            lin = next(n for n in names if n.endswith("lin1/kernel:0"))
            return np.asarray(f[lin])

    assert not np.array_equal(kernel(first), kernel(second))  # it trained


def test_init_from_a_checkpoint_fed_otherwise_is_refused(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_source_root(tmp_path / "data")
    args = ["--data", str(root), "--sources", "apple", "--out", str(tmp_path / "run"),
            "--init-from", str(tiny_checkpoint), "--limit", "4"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --init-from:") and "differs" in err and err.count("\n") == 1


def test_qat_flags_need_sources_and_sane_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "r")
    assert main(["--data", str(tmp_path), "--out", out, "--qat-steps", "2"]) == 2
    assert "--qat-steps needs --sources" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--sources", "apple", "--out", out,
                 "--qat-steps", "-1"]) == 2  # fmt: skip
    assert "--qat-steps and --qat-agreement must be >= 0" in capsys.readouterr().err
