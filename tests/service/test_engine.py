from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from service.bundle import BundleError, load_bundle, write_manifest
from service.engine import EncodeError, Engine, pad_right, session_options
from tests.service.tiny_bundle import MAX_LENGTH, build_bundle

TEXTS = ["I love this game!", "awful update today", "the movie", "great " * 30, "sad"]


@pytest.fixture(scope="module")
def engine(tiny_bundle: Path) -> Engine:
    return Engine(load_bundle(tiny_bundle), threads=1)


def test_encode_adds_special_tokens_and_truncates(engine: Engine) -> None:
    short, long = engine.encode(["I love this", "great " * 30])
    vocab = engine.tokenizer.get_vocab()
    assert short.ids[0] == vocab["[CLS]"] and short.ids[-1] == vocab["[SEP]"]
    assert not short.truncated
    assert long.truncated and len(long.ids) == MAX_LENGTH and long.ids[-1] == vocab["[SEP]"]
    exact = "great " * (MAX_LENGTH - 2)  # fills max_length exactly: not truncated
    assert not engine.encode([exact])[0].truncated
    assert engine.encode(["I love this"]) == engine.encode(["I love this", "x"])[:1]


def test_pair_model_encodes_entity_then_text_and_cuts_only_the_text(pair_bundle: Path) -> None:
    engine = Engine(load_bundle(pair_bundle), threads=1)
    vocab = engine.tokenizer.get_vocab()
    (enc,) = engine.encode(["love it"], ["game"])
    assert enc.ids == [vocab[t] for t in ("[CLS]", "game", "[SEP]", "love", "it", "[SEP]")]
    long, short = engine.encode(["great " * 30, "sad"], ["the game", "the movie"])
    assert long.truncated and len(long.ids) == MAX_LENGTH and long.ids[1:4] == [
        vocab["the"], vocab["game"], vocab["[SEP]"]
    ]  # fmt: skip
    assert not short.truncated
    with pytest.raises(EncodeError, match="no room"):
        engine.encode(["good"], ["game " * MAX_LENGTH])
    # no entity: an empty one, "[CLS] [SEP] text [SEP]"
    assert engine.encode(["good"])[0].ids == [vocab[t] for t in ("[CLS]", "[SEP]", "good", "[SEP]")]
    assert engine.encode(["good"]) == engine.encode(["good"], [""])
    with pytest.raises(EncodeError, match="2 entities for 1 texts"):
        engine.encode(["good"], ["a", "b"])
    assert engine.batch_drift() < 1e-6  # the probes run without entities


def test_plain_model_refuses_entities(engine: Engine) -> None:
    with pytest.raises(EncodeError, match="takes no entities"):
        engine.encode(["good"], ["game"])


def test_infer_returns_probabilities_in_label_order(engine: Engine) -> None:
    probs = engine.infer([enc.ids for enc in engine.encode(["I love this", "I hate this"])])
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert engine.labels[int(probs[0].argmax())] == "Positive"
    assert engine.labels[int(probs[1].argmax())] == "Negative"


def test_padding_does_not_change_results(engine: Engine) -> None:
    rows = [enc.ids for enc in engine.encode(TEXTS)]
    batched = engine.infer(rows)
    single = np.concatenate([engine.infer([row]) for row in rows])
    assert np.abs(batched - single).max() <= 1e-6
    # and the pad row is not neutral: unmasked padding would show
    padded = rows[2] + [engine.pad_id] * 5
    assert np.abs(engine.infer([padded]) - engine.infer([rows[2]])).max() > 1e-2


def test_int32_inputs_are_fed_as_int32(tmp_path: Path) -> None:
    bundle = load_bundle(build_bundle(tmp_path / "b32", ids_type=TensorProto.INT32))
    engine = Engine(bundle, threads=1)
    probs = engine.infer([enc.ids for enc in engine.encode(["I love this"])])
    assert engine.labels[int(probs[0].argmax())] == "Positive"


def test_label_count_must_match_the_model(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_bundle, tmp_path / "three"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "labels": ["a", "b", "c"]}))
    write_manifest(folder, {})
    with pytest.raises(BundleError, match=r"2 logits but config\.json lists 3 labels"):
        Engine(load_bundle(folder), threads=1)


def test_unloadable_model_is_a_bundle_error(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_bundle, tmp_path / "junk"))
    (folder / "model.onnx").write_bytes(b"not a model")
    write_manifest(folder, {})
    with pytest.raises(BundleError, match="ONNX Runtime cannot load it"):
        Engine(load_bundle(folder), threads=1)


def test_warmup_runs_the_extreme_shapes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, int]] = []
    real = engine.infer

    def spy(rows):  # type: ignore[no-untyped-def]
        shapes.append((len(rows), max(len(r) for r in rows)))
        return real(rows)

    monkeypatch.setattr(engine, "infer", spy)
    engine.warmup(max_batch=4, max_tokens=4 * engine.max_length)
    short = shapes[0][1]
    # one short text, a full batch of short texts, then as many full-length rows as the budget takes
    assert shapes == [(1, short), (4, short), (4, engine.max_length)]


def test_session_threads_and_spinning_follow_the_arguments(tiny_bundle: Path) -> None:
    options = Engine(load_bundle(tiny_bundle), threads=2).session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = Engine(load_bundle(tiny_bundle), threads=1, spin=True).session
    with pytest.raises(Exception, match="allow_spinning"):  # not set: ORT's default (spin)
        spinning.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


def test_session_options_are_the_services_settings() -> None:
    options = session_options(3, spin=False)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.log_severity_level == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(Exception, match="allow_spinning"):  # not set: ORT's default (spin)
        session_options(1, spin=True).get_session_config_entry("session.intra_op.allow_spinning")


def test_batch_drift_is_zero_for_a_row_independent_model(engine: Engine) -> None:
    assert engine.batch_drift() <= 1e-6


def test_batch_drift_detects_batch_coupled_models(tmp_path: Path) -> None:
    coupled = Engine(load_bundle(build_bundle(tmp_path / "c", coupled=True)), threads=1)
    assert coupled.batch_drift() > 1e-3


def test_padding_is_right_sided(engine: Engine) -> None:
    rows = [enc.ids for enc in engine.encode(["love", "the best game is this"])]
    ids, mask = pad_right(rows, 0)
    width = len(rows[1])
    assert mask[0].tolist() == [1] * len(rows[0]) + [0] * (width - len(rows[0]))
    assert ids[0, len(rows[0]) :].tolist() == [0] * (width - len(rows[0]))
    assert mask[1].all() and ids[1].tolist() == rows[1]
