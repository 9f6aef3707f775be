"""End to end through the CLI: a tiny random DistilBERT exported from checkpoint to bundle."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from tokenizers import Tokenizer

from export import rewrite, static, texts
from export.cli import main
from service.bundle import BundleError, load_bundle, sha256_file
from service.engine import Engine

MAX_TEXTS = 64  # as in conftest.MAX_TEXTS
ExportCli = Callable[..., int]
pytestmark = pytest.mark.slow


def test_bundle_is_complete_verified_and_describes_itself(
    exported: Path, tiny_checkpoint: Path, entity_data: Path
) -> None:
    bundle = load_bundle(exported)  # verifies every hash
    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json", "manifest.json", "model.onnx", "tokenizer.json",
    ]  # fmt: skip
    assert bundle.labels == ("Negative", "Positive")
    assert bundle.max_length == 64
    assert bundle.model_name == "sentiment-tiny"
    config = json.loads((exported / "config.json").read_text())
    assert config["inputs"] == {"input_ids": "int32", "attention_mask": "int32"}
    assert config["lowercase"] is True and config["text_pair"] is False

    m = bundle.manifest
    assert m["fusion"]["EmbedLayerNormalization"] == 1
    assert m["fusion"]["Attention"] == 2
    assert m["fusion"]["SkipLayerNormalization"] == 4
    assert m["fusion"]["BiasGelu"] + m["fusion"]["Gelu"] == 2
    parity = m["metrics"]["parity"]
    assert parity["passed"] is True
    assert parity["max_abs_logit_diff_tf_fp32"] <= 1e-3  # the production threshold
    assert parity["thresholds"]["max_logit_diff"] == 1e-3
    assert m["metrics"]["fp32"]["n"] == m["metrics"]["int8"]["n"] == MAX_TEXTS
    assert 0 < m["sizes"]["int8_bytes"] < m["sizes"]["fp32_bytes"]
    assert m["sizes"]["int8_bytes"] == (exported / "model.onnx").stat().st_size
    q = m["quantization"]
    assert q["scheme"] == "static-int8"  # auto: static held on the held-out training tweets
    assert q["matmuls_int8"] == 2 * 4 + 2  # 4 per layer (QKV, out, FFN in/out) + head
    assert parity["int8_batch_drift"] <= parity["thresholds"]["max_batch_drift"] == 1e-5
    assert q["rung"] == "static int8" and q["fp32_nodes"] == []
    assert q["calibration"]["protocol"].startswith("clean training split")
    assert q["calibration_texts"] + q["held_out"]["texts"] == q["calibration"]["rows"]
    assert q["held_out"]["agreement"] >= 0.8  # TINY_GATE_ARGS' --min-agreement
    assert m["metrics"]["quantization_attempts"] == [
        {"rung": "static int8", "passed": True, "failures": []}
    ]
    assert {"tensorflow", "transformers", "tf2onnx", "onnx", "onnxruntime", "tokenizers"} <= set(
        m["versions"]
    )
    source = m["source"]  # the inputs' hashes, as sha256sum prints them
    weights = (tiny_checkpoint / "tf_model.h5").read_bytes()
    assert (
        source["checkpoint"]["files_sha256"]["tf_model.h5"] == hashlib.sha256(weights).hexdigest()
    )
    validation = (entity_data / "twitter_validation.csv").read_bytes()
    assert (
        source["data"]["files_sha256"]["twitter_validation.csv"]
        == hashlib.sha256(validation).hexdigest()
    )


def test_shipped_model_is_int8_and_fused(exported: Path) -> None:
    """Every weight op int8 with calibrated scales; no batch-wide (dynamic) quantization."""
    ops = Counter(node.op_type for node in onnx.load(exported / "model.onnx").graph.node)
    assert ops["MatMulIntegerToFloat"] == 8 and ops["MatMul"] == 0
    assert ops["QAttention"] == 2 and ops["QEmbedLayerNormalization"] == 1
    assert ops["SkipLayerNormalization"] == 4 and ops["FastGelu"] == 2
    assert not set(ops) & {"DynamicQuantizeLinear", "Attention", "Softmax", "Erf", "ReduceMean"}


def test_shipped_tokenizer_neither_pads_nor_truncates(exported: Path) -> None:
    data = json.loads((exported / "tokenizer.json").read_text())
    assert data["padding"] is None and data["truncation"] is None
    tokenizer = Tokenizer.from_file(str(exported / "tokenizer.json"))
    short, long = tokenizer.encode("love"), tokenizer.encode("love this game " * 100)
    assert short.attention_mask == [1] * len(short.ids)  # not padded
    assert len(long.ids) > 300  # not cut at max_length (64): the service truncates


def test_manifest_metrics_are_those_of_the_shipped_files(exported: Path, entity_data: Path) -> None:
    """Recompute the int8 accuracy from the bundle alone, as the service answers, one text per
    call (the headline run: batched int8 logits also depend on the batch-mates, see the gate).
    Not through the export's own encoding and metrics: the figure must be the served one."""
    bundle = load_bundle(exported)
    rows = texts.from_data(entity_data, list(bundle.labels), max_texts=MAX_TEXTS)
    engine = Engine(bundle, threads=1)
    served = [
        engine.labels[int(engine.infer([encoded.ids])[0].argmax())]
        for encoded in engine.encode(rows.texts)
    ]
    truth = [bundle.labels[label] for label in rows.labels]
    correct = sum(label == true for label, true in zip(served, truth, strict=True))
    assert bundle.manifest["metrics"]["parity"]["int8_headline_run"] == "batch1"
    assert bundle.manifest["metrics"]["int8"]["n"] == len(truth) == MAX_TEXTS
    assert bundle.manifest["metrics"]["int8"]["accuracy"] == pytest.approx(correct / MAX_TEXTS)


@pytest.mark.parametrize("victim", ["model.onnx", "tokenizer.json", "config.json"])
def test_tampered_file_fails_verification(exported: Path, tmp_path: Path, victim: str) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(exported, copy)
    with open(copy / victim, "ab") as handle:
        handle.write(b" ")
    with pytest.raises(BundleError, match=f"{victim}: sha256 does not match"):
        load_bundle(copy)


PREPARE = rewrite.prepare_for_fusion  # the real one, before any monkeypatching


def corrupt_final_bias(model: onnx.ModelProto, head_dim: int) -> dict[str, int]:
    """The real rewrites, then a 0.01 nudge to the classifier bias: a corrupted graph."""
    counts = PREPARE(model, head_dim)
    final = next(n for n in model.graph.node if n.output[0] == "logits")
    bias = next(i for i in model.graph.initializer if i.name in final.input)
    value = onnx.numpy_helper.to_array(bias) + np.float32(0.01)
    bias.CopyFrom(onnx.numpy_helper.from_array(value, bias.name))
    return counts


def test_a_refused_int8_graph_falls_back_to_the_next_rung(
    tiny_checkpoint: Path,
    export_cli: ExportCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from export import parity

    real_gate = parity.gate
    calls: list[int] = []

    def gate_refusing_the_first(**kwargs: object) -> parity.GateReport:
        report = real_gate(**kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:
            report.failures.append("refused for the test")
        return report

    monkeypatch.setattr(parity, "gate", gate_refusing_the_first)
    out = tmp_path / "bundle"
    assert export_cli(tiny_checkpoint, out, "--quantization", "rowwise") == 0
    manifest = load_bundle(out).manifest
    attempts = manifest["metrics"]["quantization_attempts"]
    assert [a["passed"] for a in attempts] == [False, True]
    assert attempts[0]["rung"] == "int8" and manifest["quantization"]["rung"] == attempts[1]["rung"]
    kept = manifest["quantization"]["fp32_nodes"]
    graph = onnx.load(out / "model.onnx").graph
    assert kept and set(kept) <= {
        n.name for n in graph.node if n.op_type in ("MatMul", "Attention")
    }
    assert any(
        n.op_type == "DynamicQuantizeLinear" or n.op_type.startswith("Q") for n in graph.node
    )
    ranked = manifest["metrics"]["quantization_sensitivity"]
    assert ranked["calibration"]["protocol"].startswith("clean training split")
    assert set(kept) <= set(ranked["relative_error_by_node"])


def clipping_everything(model: onnx.ModelProto, rows: object) -> static.Channels:
    """Calibrated ranges so narrow that every activation clips: a static graph that is wrong,
    smoothed or not."""
    inits = {i.name: i for i in model.graph.initializer}
    rows_of = {n.input[0]: inits[n.input[1]].dims[0] for n in static.targets(model)}
    return {x: (np.zeros(k, np.float32), np.full(k, 1e-6, np.float32)) for x, k in rows_of.items()}


def test_static_int8_that_fails_on_held_out_tweets_falls_back_to_rowwise(
    tiny_checkpoint: Path,
    export_cli: ExportCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(static, "channel_ranges", clipping_everything)
    out = tmp_path / "bundle"
    assert export_cli(tiny_checkpoint, out) == 0
    manifest = load_bundle(out).manifest
    *statics, second = manifest["metrics"]["quantization_attempts"]
    assert [a["rung"] for a in statics] == [
        "static int8",
        "static int8, smoothed (alpha 0.85)",
        "static int8, smoothed (alpha 0.85), fp32 head",
        "static int8, fp32 head",
    ]
    for attempt in statics:
        assert not attempt["passed"] and attempt["failures"][0].startswith("held-out agreement")
    assert second == {"rung": "int8", "passed": True, "failures": []}
    assert manifest["quantization"]["scheme"] == "rowwise-int8"


def test_static_only_refused_exits_1_and_needs_training_tweets(
    tiny_checkpoint: Path,
    export_cli: ExportCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = static.channel_ranges
    monkeypatch.setattr(static, "channel_ranges", clipping_everything)
    out = tmp_path / "bundle"
    assert export_cli(tiny_checkpoint, out, "--quantization", "static") == 1
    assert "static int8 refused: held-out agreement" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setattr(static, "channel_ranges", real)
    (tmp_path / "texts.tsv").write_text("Positive\tlove this game\n")
    args = ["--checkpoint", str(tiny_checkpoint), "--texts-file", str(tmp_path / "texts.tsv")]
    assert main([*args, "--out", str(out), "--quantization", "static"]) == 2
    assert "static int8 is calibrated on training tweets" in capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in folder.iterdir()}


def test_corrupted_graph_fails_the_gate_and_keeps_the_previous_bundle(
    exported: Path,
    tiny_checkpoint: Path,
    export_cli: ExportCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "models" / "sentiment-tiny"
    shutil.copytree(exported, out)
    before = snapshot(out)
    monkeypatch.setattr(rewrite, "prepare_for_fusion", corrupt_final_bias)
    keep = tmp_path / "keep"
    assert export_cli(tiny_checkpoint, out, "--keep-intermediate", str(keep)) == 1
    assert "parity gate failed" in capsys.readouterr().err
    assert snapshot(out) == before  # the old bundle is untouched and still verifies
    load_bundle(out)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial folder left
    gate = json.loads((keep / "gate.json").read_text())
    assert gate["parity"]["max_abs_logit_diff_tf_fp32"] > 1e-3


def test_mismatched_model_fails_the_gate(
    tiny_checkpoint: Path,
    tiny_checkpoint_factory: Callable[[Path, int], Path],
    export_cli: ExportCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The graph comes from another training run than the checkpoint the gate holds it to."""
    from export import convert

    other = convert.load_checkpoint(tiny_checkpoint_factory(tmp_path / "other", 1))
    to_onnx = convert.to_onnx
    monkeypatch.setattr(convert, "to_onnx", lambda _model, opset: to_onnx(other.model, opset))
    out = tmp_path / "bundle"
    assert export_cli(tiny_checkpoint, out) == 1
    assert not out.exists()


def test_unfused_graph_fails_the_export(
    tiny_checkpoint: Path,
    export_cli: ExportCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(rewrite, "prepare_for_fusion", lambda model, head_dim: {})
    out = tmp_path / "bundle"
    assert export_cli(tiny_checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "not fully fused" in err and "Attention: 0 (expected 2)" in err
    assert not out.exists()


def test_texts_file_replaces_the_data_folder(tiny_checkpoint: Path, tmp_path: Path) -> None:
    lines = ["Positive\tlove this game", "Negative\tworst update ever", "Positive\tgreat fix"]
    (tmp_path / "texts.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "bundle"
    args = ["--checkpoint", str(tiny_checkpoint), "--texts-file", str(tmp_path / "texts.tsv")]
    gate = ["--min-agreement", "0", "--max-accuracy-delta-pt", "100"]
    assert main([*args, "--out", str(out), *gate]) == 0
    manifest = load_bundle(out).manifest
    assert manifest["source"]["data"]["kind"] == "file"
    assert manifest["metrics"]["fp32"]["n"] == 3
    assert manifest["metrics"]["parity"]["int8_batch_drift"] <= 1e-5


def test_bad_inputs_exit_2_with_a_message(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ["--checkpoint", str(tmp_path / "nope"), "--texts-file", "x", "--out", str(tmp_path)]
    assert main(missing) == 2
    assert "is incomplete: config.json is missing" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_text("Maybe\tsomething\n")
    bad = ["--checkpoint", str(tiny_checkpoint), "--texts-file", str(tmp_path / "bad.tsv")]
    assert main([*bad, "--out", str(tmp_path / "b")]) == 2
    assert "bad.tsv:1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: --data and --texts-file together
        main([*bad, "--data", str(tmp_path), "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2


def test_help_needs_no_tensorflow(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--keep-intermediate" in capsys.readouterr().out


def test_sources_gate_runs_on_every_source_test_split(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from tests.training.source_fixtures import write_source_root
    from training.corpus import build_corpus

    root = write_source_root(tmp_path / "data")
    out = tmp_path / "bundle"
    gate = ["--min-agreement", "0", "--max-accuracy-delta-pt", "100"]
    args = [
        "--checkpoint",
        str(tiny_checkpoint),
        "--data",
        str(root),
        "--sources",
        "semeval2017,apple",
    ]
    assert main([*args, "--out", str(out), *gate]) == 0
    data = load_bundle(out).manifest["source"]["data"]
    tests = build_corpus(root, ["semeval2017", "apple"], ["Negative", "Positive"]).tests
    assert data["kind"] == "sources"
    assert data["per_source"] == {name: len(rows) for name, rows in tests.items()}
    assert data["rows"] == sum(len(rows) for rows in tests.values()) > 0
