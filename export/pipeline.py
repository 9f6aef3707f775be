"""checkpoint → tf2onnx → rewrites → fusion → int8 → parity gate → bundle, in that order.

Every step that changes the graph is followed by a check: fusion counts after the optimizer,
logits against TF after each fp32 stage, labels and accuracy after quantization. Only when all
pass is the bundle published.
"""

from __future__ import annotations

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

from export import bundle, convert, fuse, parity, quantize, rewrite, static, texts
from export.errors import ExportError, GateError
from service.bundle import MODEL, BundleError, check_views, write_manifest

# Gate batches: length-sorted, right-padded, this many texts. int8 also runs one text at a time:
# both are held to the criteria, and to each other (batch invariance); batch1 is reported.
GATE_BATCH = 32
RANKING_TEXTS = 128  # training tweets that rank row-wise's nodes by sensitivity
# Static int8 is calibrated on half of this many training tweets and checked on the other half.
STATIC_TEXTS = 1024


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

    def calibration(n: int) -> texts.Texts | None:
        """`n` training tweets, which calibrate and rank quantization settings (the gate's
        test texts only judge the result); None without the data folder."""
        if data_dir and sources:
            return texts.calibration_from_sources(data_dir, sources, labels, n)
        return texts.calibration_from_data(data_dir, labels, n) if data_dir else None

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
    calibration: Callable[[int], texts.Texts | None],
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
    paths = {
        "tf2onnx": work / "model.fp32.tf2onnx.onnx",
        "rewritten": work / "model.fp32.rewritten.onnx",
        "fused": work / "model.fp32.fused.onnx",
        "unfused": work / "model.fp32.unfused.onnx",  # what int8 rewrites (export.quantize)
    }
    int8_path = work / "model.int8.onnx"

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

    tokenizer_path = bundle.write_tokenizer(ckpt.path / "tokenizer.json", work)

    def encode(sample: texts.Texts) -> list[np.ndarray]:
        """As training fed the model: its truncation, its text normalisation."""
        return texts.encode(
            tokenizer_path, sample, max_length=ckpt.info.max_length,
            text_pair=ckpt.info.text_pair, preprocess=ckpt.info.preprocess,
        )  # fmt: skip

    ids = encode(gate_texts)
    pad_id = int(ckpt.model.config.pad_token_id or 0)
    batches = texts.batches(ids, pad_id=pad_id, batch_size=GATE_BATCH)
    int8_batches = {
        "batch1": texts.batches(ids, pad_id=pad_id, batch_size=1),
        f"batch{GATE_BATCH}": batches,
    }
    n = len(gate_texts)
    tf_logits = parity.run_batches(
        lambda i, m: convert.reference_logits(ckpt.model, i, m), batches, n
    )
    stages = {
        name: parity.run_batches(parity.onnx_predictor(path), batches, n)
        for name, path in paths.items()
    }

    # Static int8 first (the fastest) if it holds on held-out training tweets; then row-wise,
    # all-int8 first: only if the gate refuses it are nodes ranked (on training tweets) and the
    # ladder's fp32 rungs tried, cheapest first. The gate's criteria never change, and every
    # attempt is recorded in the manifest.
    attempts: list[dict[str, Any]] = []

    def attempt(settings: dict[str, Any]) -> parity.GateReport:
        rung = settings["rung"]
        log(f"int8 ({settings['scheme']}, {rung}): {int8_path.stat().st_size / 1e6:.2f} MB")
        int8 = parity.onnx_predictor(int8_path)
        result = parity.gate(
            tf_logits=tf_logits,
            fp32_stages=stages,
            int8_runs={k: parity.run_batches(int8, b, n) for k, b in int8_batches.items()},
            labels=gate_texts.labels,
            thresholds=thresholds,
        )
        _log_gate(result, log)
        attempts.append({"rung": rung, "passed": result.passed, "failures": result.failures})
        return result

    report: parity.GateReport | None = None
    sample = calibration(STATIC_TEXTS) if quantization != "rowwise" else None
    if sample is None and quantization == "static":
        raise ExportError("static int8 is calibrated on training tweets: give --data")
    if sample is None and quantization == "auto":
        log("static int8 skipped: no training tweets to calibrate on (a texts file only)")
    static_ids, rungs = (encode(sample), _static_rungs(fused)) if sample else ([], [])
    for rung, fp32_nodes in rungs:
        shipped = _static_int8(fused, int8_path, paths["fused"], static_ids, fp32_nodes, log)
        shipped |= {"rung": rung, "calibration": sample.source if sample else None}
        agreement = shipped["held_out"]["agreement"]
        if agreement >= thresholds.min_agreement - parity.EPS:
            report = attempt(shipped)
            if report.passed or report.fp32_failed:
                break
        else:
            failure = f"held-out agreement {agreement:.2%} < {thresholds.min_agreement:.2%}"
            attempts.append({"rung": rung, "passed": False, "failures": [failure]})
            report = None
    if quantization == "static" and not (report and report.passed):
        raise GateError(f"static int8 refused: {'; '.join(attempts[-1]['failures'])}")
    ranking: dict[str, Any] | None = None
    if report is None or not (report.passed or report.fp32_failed):
        shipped = quantize.quantize(prepared, int8_path) | {"rung": "int8"}
        report = attempt(shipped)
        if not (report.passed or report.fp32_failed):
            sample = calibration(RANKING_TEXTS) or gate_texts
            scores = quantize.sensitivity(prepared, encode(sample))
            ranking = {
                "calibration": sample.source,
                "relative_error_by_node": {
                    k: round(v, 5) for k, v in sorted(scores.items(), key=lambda kv: -kv[1])
                },
            }
            for rung, fp32_nodes in quantize.ladder(prepared, scores)[1:]:  # [0]: all-int8, tried
                shipped = quantize.quantize(prepared, int8_path, fp32_nodes=fp32_nodes)
                shipped["rung"] = rung
                report = attempt(shipped)
                if report.passed:
                    break
    report.metrics["quantization_attempts"] = attempts
    if ranking is not None:
        report.metrics["quantization_sensitivity"] = ranking
    (work / "gate.json").write_text(json.dumps(report.metrics, indent=2) + "\n")
    if not report.passed:
        raise GateError("parity gate failed: " + "; ".join(report.failures))
    sizes = {
        "fp32_bytes": paths["fused"].stat().st_size,
        "int8_bytes": int8_path.stat().st_size,
    }
    log(
        f"shipping {shipped['scheme']} ({shipped['rung']}): "
        f"{sizes['fp32_bytes'] / 1e6:.2f} MB -> {sizes['int8_bytes'] / 1e6:.2f} MB"
    )

    config = {
        "model_name": model_name,
        "labels": list(ckpt.info.labels),
        "max_length": ckpt.info.max_length,
        "base_model": ckpt.info.base_model,
        "text_pair": ckpt.info.text_pair,
        "lowercase": bundle.lowercases(tokenizer_path),
        "pad_token_id": pad_id,
        "padding_side": "right",  # the attention reads the mask as lengths
        "inputs": {name: "int32" for name in convert.INPUT_NAMES},
        "output": convert.OUTPUT_NAME,
        **({"preprocess": ckpt.info.preprocess} if ckpt.info.preprocess else {}),
        **({"views": views} if views else {}),
    }
    staging = bundle.staging_folder(out)
    try:
        shutil.copy2(int8_path, staging / MODEL)
        shutil.copy2(tokenizer_path, staging / tokenizer_path.name)
        bundle.write_config(staging, config)
        manifest = write_manifest(
            staging,
            {
                "model_name": model_name,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "metrics": report.metrics,
                "fusion": counts,
                "rewrites": rewrites,
                "quantization": shipped,
                "sizes": sizes,
                "onnx": {"opset": opset, **{k: config[k] for k in ("inputs", "output")}},
                "gate_batching": {
                    "batch_size": GATE_BATCH,
                    "order": "length-sorted",
                    "padding": "right",
                    "int8_runs": list(int8_batches),
                },
                "versions": bundle.tool_versions(),
                "source": {
                    "checkpoint": {
                        "path": str(ckpt.path),
                        "files_sha256": bundle.hash_tree(ckpt.path),
                    },
                    "data": gate_texts.source,
                },
            },
        )
        bundle.publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"bundle written to {out} in {time.perf_counter() - started:.1f} s")
    return ExportResult(out=out, manifest=manifest)


def _check_views(
    views: Mapping[str, Sequence[str]], labels: list[str], model_name: str
) -> dict[str, list[str]]:
    """The service's rule (service.bundle.check_views), as an export error."""
    try:
        checked = check_views(dict(views), labels, model_name)
    except BundleError as exc:
        raise ExportError(str(exc)) from None
    return {name: list(subset) for name, subset in checked.items()}


def _static_rungs(fused: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """Static int8 candidates, cheapest first: every MatMul int8, then the head in fp32."""
    return [("static int8", []), ("static int8, fp32 head", static.head_nodes(fused))]


def _static_int8(
    fused: onnx.ModelProto,
    int8_path: Path,
    fp32_path: Path,
    ids: list[np.ndarray],
    fp32_nodes: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Write the static int8 graph calibrated on half of `ids` (training tweets) and measure
    its label agreement with fp32 on the other half, one text per run: the check it must pass
    before the gate, so the scheme is never chosen on the gate's test texts."""
    settings = quantize.quantize_static(fused, int8_path, ids[0::2], fp32_nodes=fp32_nodes)
    held = texts.batches(ids[1::2], pad_id=0, batch_size=1)
    fp32 = parity.run_batches(parity.onnx_predictor(fp32_path), held, len(held))
    int8 = parity.run_batches(parity.onnx_predictor(int8_path), held, len(held))
    agreement = float((fp32.argmax(axis=1) == int8.argmax(axis=1)).mean())
    log(f"static int8 on {len(held)} held-out training tweets: label agreement {agreement:.2%}")
    return settings | {
        "held_out": {"texts": len(held), "agreement": round(agreement, 5)},
    }


def _log_gate(report: parity.GateReport, log: Callable[[str], None]) -> None:
    m, p = report.metrics, report.metrics["parity"]
    rows = {
        "tf": m["tf"],
        "fp32": m["fp32"],
        **{f"int8 {k}": v for k, v in m["int8_by_run"].items()},
    }
    for name, row in rows.items():
        log(f"{name:>12}: accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}")
    stages = ", ".join(f"{k} {v:.2e}" for k, v in p["max_abs_logit_diff_tf_by_stage"].items())
    log(f"max |Δlogit| vs TF: {stages}")
    for run, agreement in p["label_agreement_int8_fp32_by_run"].items():
        delta = p["accuracy_delta_int8_fp32_by_run"][run]
        log(
            f"int8 ({run}) vs fp32: label agreement {agreement:.2%}, accuracy {delta * 100:+.2f} pt"
        )
    log(f"int8 batch drift (max |Δprob|, batch1 vs batch{GATE_BATCH}): {p['int8_batch_drift']:.2e}")
    log("parity gate: " + ("PASS" if report.passed else "FAIL"))
