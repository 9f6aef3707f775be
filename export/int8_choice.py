"""Which int8 graph ships: each candidate, cheapest first, held to the unchanged parity gate.

Static int8 (the fastest) is tried first, and only if it keeps its label agreement on held-out
training tweets; then row-wise, all-int8 first and, if the gate refuses it, with the fp32 nodes
`export.quantize.ladder` lists. The gate's texts only judge: calibration and node ranking read
training tweets. Every attempt, refused or not, is recorded for the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export import convert, parity, quantize, static, texts
from export.errors import ExportError, GateError

# Gate batches: length-sorted, right-padded, this many texts. int8 also runs one text at a time:
# both are held to the criteria, and to each other (batch invariance); batch1 is reported.
GATE_BATCH = 32
RANKING_TEXTS = 128  # training tweets that rank row-wise's nodes by sensitivity
# Static int8 is calibrated on half of this many training tweets and checked on the other half.
STATIC_TEXTS = 1024
STATIC_SMOOTHING = 0.85  # the SmoothQuant alpha of the smoothed static rungs

Calibration = Callable[[int], texts.Texts | None]  # n training tweets; None without the data
Encode = Callable[[texts.Texts], list[np.ndarray]]  # token ids, as training fed the model
Attempt = tuple[dict[str, Any], parity.GateReport]  # an int8 graph's settings, the gate's report


@dataclass
class Judge:
    """The gate's fixed side (TF's and every fp32 stage's logits on the gate's texts), computed
    once and held against each int8 graph written to `int8_path`; every attempt is recorded
    for the manifest."""

    gate_texts: texts.Texts
    tf_logits: np.ndarray
    stages: dict[str, np.ndarray]
    int8_batches: dict[str, list[texts.Batch]]
    thresholds: parity.Thresholds
    int8_path: Path
    log: Callable[[str], None]
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def int8_size(self) -> int:
        return self.int8_path.stat().st_size

    def attempt(self, settings: dict[str, Any]) -> parity.GateReport:
        """Run the int8 graph now at `int8_path` under every batching and apply the gate."""
        rung = settings["rung"]
        self.log(f"int8 ({settings['scheme']}, {rung}): {self.int8_size / 1e6:.2f} MB")
        int8 = parity.onnx_predictor(self.int8_path)
        n = len(self.gate_texts)
        result = parity.gate(
            tf_logits=self.tf_logits,
            fp32_stages=self.stages,
            int8_runs={k: parity.run_batches(int8, b, n) for k, b in self.int8_batches.items()},
            labels=self.gate_texts.labels,
            thresholds=self.thresholds,
        )
        _log_gate(result, self.log)
        self.attempts.append({"rung": rung, "passed": result.passed, "failures": result.failures})
        return result

    def refuse(self, rung: str, failure: str) -> None:
        """Record a rung turned away before the gate saw it."""
        self.attempts.append({"rung": rung, "passed": False, "failures": [failure]})


def make_judge(
    ckpt: convert.Checkpoint,
    stage_paths: dict[str, Path],
    gate_texts: texts.Texts,
    ids: list[np.ndarray],
    thresholds: parity.Thresholds,
    int8_path: Path,
    log: Callable[[str], None],
) -> Judge:
    """The gate's batches and reference logits: int8 runs both one text at a time and in
    batches, so that batch invariance is checked too."""
    pad_id = ckpt.pad_id
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
        for name, path in stage_paths.items()
    }
    return Judge(gate_texts, tf_logits, stages, int8_batches, thresholds, int8_path, log)


def choose(
    fused: onnx.ModelProto,
    fused_path: Path,
    prepared: onnx.ModelProto,
    judge: Judge,
    calibration: Calibration,
    encode: Encode,
    quantization: str,
) -> tuple[dict[str, Any], parity.GateReport, dict[str, Any] | None]:
    """Static int8 first (the fastest) if it holds on held-out training tweets, then row-wise:
    the gate's criteria never change. Returns the last attempt's settings and report, and
    row-wise's node ranking when one was made."""
    last = _try_static(fused, fused_path, judge, calibration, encode, quantization)
    if quantization == "static" and not (last and last[1].passed):
        raise GateError(f"static int8 refused: {'; '.join(judge.attempts[-1]['failures'])}")
    if last is not None and (last[1].passed or last[1].fp32_failed):
        return *last, None
    return _try_rowwise(prepared, judge, calibration, encode)


def _try_static(
    fused: onnx.ModelProto,
    fused_path: Path,
    judge: Judge,
    calibration: Calibration,
    encode: Encode,
    quantization: str,
) -> Attempt | None:
    """Each static rung, cheapest first, checked on held-out training tweets before the gate
    (so the scheme is never chosen on the gate's texts); None when the last rung never
    reached the gate, or there were no training tweets."""
    sample = calibration(STATIC_TEXTS) if quantization != "rowwise" else None
    if sample is None and quantization == "static":
        raise ExportError("static int8 is calibrated on training tweets: give --data")
    if sample is None and quantization == "auto":
        judge.log("static int8 skipped: no training tweets to calibrate on (a texts file only)")
    if not sample:
        return None
    ids, minimum = encode(sample), judge.thresholds.min_agreement
    calibrated, held = ids[0::2], texts.batches(ids[1::2], pad_id=0, batch_size=1)
    channels = static.channel_ranges(fused, calibrated)
    fp32 = parity.run_batches(parity.onnx_predictor(fused_path), held, len(held)).argmax(axis=1)
    last: Attempt | None = None
    for rung, fp32_nodes, alpha in _static_rungs(fused):
        shipped = _static_int8(
            fused, judge, (len(calibrated), channels), held, fp32, fp32_nodes, alpha
        )
        shipped |= {"rung": rung, "calibration": sample.source}
        agreement = shipped["held_out"]["agreement"]
        if agreement >= minimum - parity.EPS:
            last = shipped, judge.attempt(shipped)
            if last[1].passed or last[1].fp32_failed:
                break
        else:
            judge.refuse(rung, f"held-out agreement {agreement:.2%} < {minimum:.2%}")
            last = None
    return last


def _try_rowwise(
    prepared: onnx.ModelProto,
    judge: Judge,
    calibration: Calibration,
    encode: Encode,
) -> tuple[dict[str, Any], parity.GateReport, dict[str, Any] | None]:
    """All-int8 first: only if the gate refuses it are nodes ranked (on training tweets) and
    the ladder's fp32 rungs tried, cheapest first, until one passes."""
    shipped = quantize.quantize(prepared, judge.int8_path) | {"rung": "int8"}
    report = judge.attempt(shipped)
    if report.passed or report.fp32_failed:
        return shipped, report, None
    sample = calibration(RANKING_TEXTS) or judge.gate_texts
    scores = quantize.sensitivity(prepared, encode(sample))
    ranking = {
        "calibration": sample.source,
        "relative_error_by_node": {
            k: round(v, 5) for k, v in sorted(scores.items(), key=lambda kv: -kv[1])
        },
    }
    for rung, fp32_nodes in quantize.ladder(prepared, scores)[1:]:  # [0]: all-int8, tried
        shipped = quantize.quantize(prepared, judge.int8_path, fp32_nodes=fp32_nodes)
        shipped["rung"] = rung
        report = judge.attempt(shipped)
        if report.passed:
            break
    return shipped, report, ranking


def _static_rungs(fused: onnx.ModelProto) -> list[tuple[str, list[str], float | None]]:
    """Static int8 candidates (name, fp32 nodes, smoothing alpha), cheapest first: every MatMul
    int8; then with activation outliers moved into the weights (reports/experiments.md, tenth
    session); then the head in fp32 too; then the head alone in fp32."""
    head = static.head_nodes(fused)
    smoothed = f"static int8, smoothed (alpha {STATIC_SMOOTHING})"
    return [
        ("static int8", [], None),
        (smoothed, [], STATIC_SMOOTHING),
        (f"{smoothed}, fp32 head", head, STATIC_SMOOTHING),
        ("static int8, fp32 head", head, None),
    ]


def _static_int8(
    fused: onnx.ModelProto,
    judge: Judge,
    calibration: tuple[int, static.Channels],
    held: list[texts.Batch],
    fp32_labels: np.ndarray,
    fp32_nodes: list[str],
    alpha: float | None,
) -> dict[str, Any]:
    """Write the static int8 graph from `calibration` (how many training tweets, their
    channel ranges) and measure its label agreement with fp32 on the `held` out ones, one text
    per run: the check it must pass before the gate, so the scheme is never chosen on the
    gate's test texts."""
    count, channels = calibration
    settings = quantize.quantize_static(
        fused, judge.int8_path, channels, texts=count, fp32_nodes=fp32_nodes, alpha=alpha
    )
    int8 = parity.run_batches(parity.onnx_predictor(judge.int8_path), held, len(held))
    agreement = float((fp32_labels == int8.argmax(axis=1)).mean())
    judge.log(
        f"static int8 on {len(held)} held-out training tweets: label agreement {agreement:.2%}"
    )
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
