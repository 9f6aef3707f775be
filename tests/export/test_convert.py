from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from export import convert
from export.errors import ExportError

pytestmark = pytest.mark.slow


def padded_batch(
    vocab_size: int, lengths: list[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(len(lengths), max(lengths)), dtype=np.int32)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 0
    return ids, mask


def test_fusable_forward_computes_what_the_keras_model_computes(converted: Any) -> None:
    model = converted.checkpoint.model
    ids, mask = padded_batch(model.config.vocab_size, [9, 4, 1, 9])
    reference = convert.reference_logits(model, ids, mask)
    ours = convert.fusable_forward(model)(ids, mask)["logits"].numpy()
    assert reference.std() > 0.1  # the fixture's logits differ, so this comparison means something
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_onnx_graph_has_the_contract_io_and_dynamic_axes(converted: Any) -> None:
    session = ort.InferenceSession(
        converted.graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {
        "input_ids": ("tensor(int32)", ["batch", "sequence"]),
        "attention_mask": ("tensor(int32)", ["batch", "sequence"]),
    }
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 2])]
    opset = {o.domain: o.version for o in converted.graph.opset_import}[""]
    assert opset >= 17
    model = converted.checkpoint.model
    for lengths in ([5], [17, 3, 11]):  # batch and sequence length both vary
        ids, mask = padded_batch(model.config.vocab_size, lengths, seed=len(lengths))
        out = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        np.testing.assert_allclose(out, convert.reference_logits(model, ids, mask), atol=1e-5)


def test_opset_below_17_is_refused(converted: Any) -> None:
    with pytest.raises(ExportError, match="opset 16"):
        convert.to_onnx(converted.checkpoint.model, opset=16)


def test_incomplete_or_unsupported_checkpoints_are_refused(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "no_sentiment"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "sentiment.json").unlink()
    with pytest.raises(ExportError, match=r"sentiment\.json is missing"):
        convert.load_checkpoint(broken)

    approx = tmp_path / "approximate_gelu"
    shutil.copytree(tiny_checkpoint, approx)
    config = json.loads((approx / "config.json").read_text())
    (approx / "config.json").write_text(json.dumps({**config, "activation": "gelu_new"}))
    with pytest.raises(ExportError, match="gelu_new"):
        convert.load_checkpoint(approx)

    labels = tmp_path / "three_labels"
    shutil.copytree(tiny_checkpoint, labels)
    info = json.loads((labels / "sentiment.json").read_text())
    info["labels"] = ["Negative", "Neutral", "Positive"]
    (labels / "sentiment.json").write_text(json.dumps(info))
    with pytest.raises(ExportError, match=r"2 outputs but sentiment\.json lists 3"):
        convert.load_checkpoint(labels)
