"""checkpoint → tf2onnx → rewrites → fusion → int8 → parity gate → bundle, in that order.

Every step that changes the graph is followed by a check: fusion counts after the optimizer,
logits against TF after each fp32 stage, labels and accuracy after quantization. Only when all
pass is the bundle published. Which int8 graph is tried, and in what order, is
`export.int8_choice`'s part.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export import bundle, convert, fuse, int8_choice, parity, quantize, rewrite, texts
from export.errors import ExportError, GateError
from service.bundle import MODEL, BundleError, check_views, write_manifest


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict[str, Any]


def _load_texts(
    data_dir: str | Path | None,
    texts_file: str | Path | None,
    labels: list[str],
    max_texts: int | None,
    sources: Sequence[str] = (),
) -> texts.Texts:
    if (data_dir is None) == (texts_file is None):
        raise ExportError("give exactly one source of parity texts: a data folder or a texts file")
    if max_texts is not None and max_texts < 1:
        raise ExportError("max_texts must be at least 1")
    if data_dir is not None and sources:
        return texts.from_sources(data_dir, sources, labels, max_texts)
    if data_dir is not None:
        return texts.from_data(data_dir, labels, max_texts)
    assert texts_file is not None
    return texts.from_file(texts_file, labels, max_texts)


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    texts_file: str | Path | None = None,
    opset: int = 17,
    max_texts: int | None = None,
    thresholds: parity.Thresholds | None = None,
    keep_intermediate: str | Path | None = None,
    model_name: str | None = None,
    sources: Sequence[str] = (),
    quantization: str = "auto",
    views: Mapping[str, Sequence[str]] | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export `checkpoint` to a bundle at `out`; raises FusionError or GateError (and ships
    nothing) when the graph is not fully fused or not faithful to the checkpoint."""
    out = Path(out)
    if quantization not in quantize.SCHEMES:
        raise ExportError(
            f"quantization must be one of {', '.join(quantize.SCHEMES)}, not {quantization!r}"
        )
    thresholds = thresholds or parity.Thresholds()
    started = time.perf_counter()
    ckpt = convert.load_checkpoint(checkpoint)
    labels = list(ckpt.info.labels)
    views = _check_views(views or {}, labels, model_name or out.name)
    gate_texts = _load_texts(data_dir, texts_file, labels, max_texts, sources)
    calibration = functools.partial(_calibration, data_dir, sources, labels)

    log(f"checkpoint {ckpt.path}: {ckpt.n_layers} layers, dim {ckpt.dim}, labels {labels}")
    log(
        f"parity texts: {len(gate_texts)} ({gate_texts.source['kind']}: {gate_texts.source['path']})"
    )

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        work = Path(tmp)
        try:
            return _export(
                ckpt, gate_texts, calibration, out, work,
                opset=opset, thresholds=thresholds, quantization=quantization,
                model_name=model_name or out.name, views=views, log=log, started=started,
            )  # fmt: skip
        finally:
            if keep_intermediate is not None:
                keep = Path(keep_intermediate)
                keep.mkdir(parents=True, exist_ok=True)
                for path in work.iterdir():
                    shutil.copy2(path, keep / path.name)
                log(f"intermediate files kept in {keep}")


def _export(
    ckpt: convert.Checkpoint,
    gate_texts: texts.Texts,
    calibration: int8_choice.Calibration,
    out: Path,
    work: Path,
    *,
    opset: int,
    thresholds: parity.Thresholds,
    quantization: str,
    model_name: str,
    views: dict[str, list[str]],
    log: Callable[[str], None],
    started: float,
) -> ExportResult:
    """The export's steps in order; each raises, and nothing is shipped, when its check fails."""
    graphs = _fp32_graphs(ckpt, work, opset, log)
    tokenizer_path = bundle.write_tokenizer(ckpt.path / "tokenizer.json", work)
    encode = functools.partial(_encode, ckpt, tokenizer_path)
    judge = int8_choice.make_judge(
        ckpt, graphs.paths, gate_texts, encode(gate_texts), thresholds,
        int8_path=work / "model.int8.onnx", log=log,
    )  # fmt: skip
    shipped, report, ranking = int8_choice.choose(
        graphs.fused, graphs.paths["fused"], graphs.prepared, judge,
        calibration=calibration, encode=encode, quantization=quantization,
    )  # fmt: skip
    _record_verdict(report, judge.attempts, ranking, work)
    sizes = {"fp32_bytes": graphs.paths["fused"].stat().st_size, "int8_bytes": judge.int8_size}
    log(
        f"shipping {shipped['scheme']} ({shipped['rung']}): "
        f"{sizes['fp32_bytes'] / 1e6:.2f} MB -> {sizes['int8_bytes'] / 1e6:.2f} MB"
    )
    config = _bundle_config(ckpt, tokenizer_path, model_name, views)
    fields = _manifest_fields(
        ckpt, graphs, judge, model_name=model_name, metrics=report.metrics,
        quantization=shipped, sizes=sizes, opset=opset, config=config,
    )  # fmt: skip
    manifest = _publish(out, judge.int8_path, tokenizer_path, config, fields)
    log(f"bundle written to {out} in {time.perf_counter() - started:.1f} s")
    return ExportResult(out=out, manifest=manifest)


def _calibration(
    data_dir: str | Path | None, sources: Sequence[str], labels: list[str], n: int
) -> texts.Texts | None:
    """`n` training tweets, which calibrate and rank quantization settings (the gate's test
    texts only judge the result); None without the data folder."""
    if data_dir and sources:
        return texts.calibration_from_sources(data_dir, sources, labels, n)
    return texts.calibration_from_data(data_dir, labels, n) if data_dir else None


@dataclass(frozen=True)
class _Fp32:
    """The fp32 graphs, saved in pipeline order under `paths` (the gate holds every stage to
    TF), and what building them counted, for the manifest."""

    paths: dict[str, Path]
    fused: onnx.ModelProto
    prepared: onnx.ModelProto  # the unfused copy row-wise int8 rewrites
    rewrites: dict[str, int]
    fusion: dict[str, int]


def _fp32_graphs(
    ckpt: convert.Checkpoint, work: Path, opset: int, log: Callable[[str], None]
) -> _Fp32:
    """tf2onnx, the rewrites, fusion (refused unless complete) and the unfused copy, each saved:
    a fusion failure stops the export before any int8 work."""
    paths = {
        "tf2onnx": work / "model.fp32.tf2onnx.onnx",
        "rewritten": work / "model.fp32.rewritten.onnx",
        "fused": work / "model.fp32.fused.onnx",
        "unfused": work / "model.fp32.unfused.onnx",  # what int8 rewrites (export.quantize)
    }
    graph = convert.to_onnx(ckpt.model, opset)
    onnx.save(graph, paths["tf2onnx"])
    rewrites = rewrite.prepare_for_fusion(graph, ckpt.head_dim)
    onnx.save(graph, paths["rewritten"])
    log(f"tf2onnx (opset {opset}) done; rewrites: {rewrites}")

    fused = fuse.fuse(graph, num_heads=ckpt.n_heads, hidden_size=ckpt.dim)
    onnx.save(fused, paths["fused"])
    counts = fuse.fusion_counts(fused)
    log("fusion: " + ", ".join(f"{op} {n}" for op, n in counts.items()))
    fuse.check_fusion(counts, ckpt.n_layers)
    prepared = quantize.prepare(fused)
    onnx.save(prepared, paths["unfused"])
    return _Fp32(paths, fused, prepared, rewrites, counts)


def _encode(
    ckpt: convert.Checkpoint, tokenizer_path: Path, sample: texts.Texts
) -> list[np.ndarray]:
    """Token ids as training fed the model: its truncation, its text normalisation."""
    return texts.encode(
        tokenizer_path, sample, max_length=ckpt.info.max_length,
        text_pair=ckpt.info.text_pair, preprocess=ckpt.info.preprocess,
    )  # fmt: skip


def _record_verdict(
    report: parity.GateReport,
    attempts: list[dict[str, Any]],
    ranking: dict[str, Any] | None,
    work: Path,
) -> None:
    """gate.json beside the intermediate graphs (kept even when the gate fails, to read why);
    a failed gate stops the export here, before anything is staged."""
    report.metrics["quantization_attempts"] = attempts
    if ranking is not None:
        report.metrics["quantization_sensitivity"] = ranking
    (work / "gate.json").write_text(json.dumps(report.metrics, indent=2) + "\n")
    if not report.passed:
        raise GateError("parity gate failed: " + "; ".join(report.failures))


def _bundle_config(
    ckpt: convert.Checkpoint, tokenizer_path: Path, model_name: str, views: dict[str, list[str]]
) -> dict[str, Any]:
    """config.json: what the service needs to feed the graph as training fed the model."""
    return {
        "model_name": model_name,
        "labels": list(ckpt.info.labels),
        "max_length": ckpt.info.max_length,
        "base_model": ckpt.info.base_model,
        "text_pair": ckpt.info.text_pair,
        "lowercase": bundle.lowercases(tokenizer_path),
        "pad_token_id": ckpt.pad_id,
        "padding_side": "right",  # the attention reads the mask as lengths
        "inputs": {name: "int32" for name in convert.INPUT_NAMES},
        "output": convert.OUTPUT_NAME,
        **({"preprocess": ckpt.info.preprocess} if ckpt.info.preprocess else {}),
        **({"views": views} if views else {}),
    }


def _manifest_fields(
    ckpt: convert.Checkpoint,
    graphs: _Fp32,
    judge: int8_choice.Judge,
    *,
    model_name: str,
    metrics: dict[str, Any],
    quantization: dict[str, Any],
    sizes: dict[str, int],
    opset: int,
    config: dict[str, Any],
) -> dict[str, Any]:
    """What the manifest records beside the file hashes: every figure and setting the bundle
    was judged and built with, and where its checkpoint and texts came from."""
    return {
        "model_name": model_name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": metrics,
        "fusion": graphs.fusion,
        "rewrites": graphs.rewrites,
        "quantization": quantization,
        "sizes": sizes,
        "onnx": {"opset": opset, **{k: config[k] for k in ("inputs", "output")}},
        "gate_batching": {
            "batch_size": int8_choice.GATE_BATCH,
            "order": "length-sorted",
            "padding": "right",
            "int8_runs": list(judge.int8_batches),
        },
        "versions": bundle.tool_versions(),
        "source": {
            "checkpoint": {
                "path": str(ckpt.path),
                "files_sha256": bundle.hash_tree(ckpt.path),
            },
            "data": judge.gate_texts.source,
        },
    }


def _publish(
    out: Path, model: Path, tokenizer: Path, config: dict[str, Any], fields: dict[str, Any]
) -> dict[str, Any]:
    """Stage the bundle beside `out` and swap it in whole: a failure removes the staging
    folder and leaves any earlier bundle as it was."""
    staging = bundle.staging_folder(out)
    try:
        shutil.copy2(model, staging / MODEL)
        shutil.copy2(tokenizer, staging / tokenizer.name)
        bundle.write_config(staging, config)
        manifest = write_manifest(staging, fields)
        bundle.publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _check_views(
    views: Mapping[str, Sequence[str]], labels: list[str], model_name: str
) -> dict[str, list[str]]:
    """The service's rule (service.bundle.check_views), as an export error."""
    try:
        checked = check_views(dict(views), labels, model_name)
    except BundleError as exc:
        raise ExportError(str(exc)) from None
    return {name: list(subset) for name, subset in checked.items()}
