"""The parity gate: the shipped graphs must give the TF checkpoint's answers.

Three criteria, on the same padded batches of real texts:
- fp32 ONNX vs TF, after every graph transformation: max |Δlogit| <= `max_logit_diff`;
- int8 vs fp32 ONNX: argmax agreement >= `min_agreement`;
- int8 vs fp32 ONNX: |accuracy difference| <= `max_accuracy_delta`;
- int8 batch invariance: a text's probabilities alone and among batch-mates differ by at most
  `max_batch_drift` (so the service may batch without changing any answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.texts import Batch

EPS = 1e-9  # so that a difference of exactly the limit (0.995 - 1.0) counts as within it


@dataclass(frozen=True)
class Thresholds:
    max_logit_diff: float = 1e-3  # fp32 ONNX vs TF
    min_agreement: float = 0.99  # int8 vs fp32 labels
    max_accuracy_delta: float = 0.005  # int8 vs fp32 accuracy, as a fraction (0.5 pt)
    max_batch_drift: float = 1e-5  # int8 max |Δprob| between batchings of the same texts


@dataclass
class GateReport:
    metrics: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    fp32_failed: bool = False  # the fp32 graph itself is off: no int8 setting can pass

    @property
    def passed(self) -> bool:
        return not self.failures


def run_batches(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray], batches: list[Batch], n: int
) -> np.ndarray:
    """Logits in text order from a `predict(input_ids, attention_mask)` applied batch by batch."""
    out: np.ndarray | None = None
    for batch in batches:
        logits = np.asarray(predict(batch.input_ids, batch.attention_mask), dtype=np.float32)
        if out is None:
            out = np.zeros((n, logits.shape[1]), dtype=np.float32)
        out[batch.index] = logits
    if out is None:
        raise ValueError("no batches to run")
    return out


def onnx_predictor(path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A predict function over an ONNX Runtime session, feeding the dtypes the graph declares."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {
        i.name: np.int64 if i.type == "tensor(int64)" else np.int32 for i in session.get_inputs()
    }

    def predict(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        outputs = session.run(["logits"], {k: v.astype(dtypes[k]) for k, v in feed.items()})
        return np.asarray(outputs[0])

    return predict


def classification(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy and macro-F1 (over the model's classes) of argmax predictions."""
    predicted = logits.argmax(axis=1)
    f1s = []
    for c in range(logits.shape[1]):
        tp = float(np.sum((predicted == c) & (labels == c)))
        denominator = float(np.sum(predicted == c) + np.sum(labels == c))
        f1s.append(2 * tp / denominator if denominator else 0.0)
    return {
        "n": len(labels),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_f1": float(np.mean(f1s)),
    }


def gate(
    *,
    tf_logits: np.ndarray,
    fp32_stages: dict[str, np.ndarray],
    int8_runs: dict[str, np.ndarray],
    labels: np.ndarray,
    thresholds: Thresholds,
) -> GateReport:
    """Compute every figure, then list each criterion that fails (all of them, not the first).

    `fp32_stages` holds the fp32 ONNX logits after each graph transformation, in order; every
    stage is held to the TF logits and the last one (the graph that is quantized) is "fp32".
    `int8_runs` holds the int8 logits under each batching; every run is held to the int8
    criteria and to the first (batch invariance), which is reported as "int8".
    """
    if not fp32_stages or not int8_runs:
        raise ValueError("gate needs at least one fp32 stage and one int8 run")
    fp32_logits = list(fp32_stages.values())[-1]
    fp32 = classification(fp32_logits, labels)
    stage_diffs = {
        name: float(np.abs(logits - tf_logits).max()) for name, logits in fp32_stages.items()
    }
    failures = [
        f"fp32 ONNX ({name}) vs TF: max |Δlogit| {diff:.3g} > {thresholds.max_logit_diff:g}"
        for name, diff in stage_diffs.items()
        if not diff <= thresholds.max_logit_diff  # `not <=` also catches NaN
    ]
    fp32_failed = bool(failures)
    int8_metrics, agreements, deltas, int8_diffs = {}, {}, {}, {}
    for name, logits in int8_runs.items():
        int8_metrics[name] = metrics = classification(logits, labels)
        agreements[name] = agreement = float(np.mean(logits.argmax(1) == fp32_logits.argmax(1)))
        deltas[name] = delta = metrics["accuracy"] - fp32["accuracy"]
        int8_diffs[name] = float(np.abs(logits - fp32_logits).max())
        if not agreement >= thresholds.min_agreement - EPS:
            failures.append(
                f"int8 ({name}) vs fp32 label agreement {agreement:.2%} < "
                f"{thresholds.min_agreement:.2%}"
            )
        if not abs(delta) <= thresholds.max_accuracy_delta + EPS:
            failures.append(
                f"int8 ({name}) accuracy {metrics['accuracy']:.2%} is {delta * 100:+.2f} pt from "
                f"fp32 {fp32['accuracy']:.2%} (allowed ±{thresholds.max_accuracy_delta * 100:g} pt)"
            )
    headline = next(iter(int8_runs))
    drift = batch_drift(int8_runs)
    if not drift <= thresholds.max_batch_drift:
        failures.append(
            f"int8 answers depend on batch-mates: max |Δprob| {drift:.3g} between "
            f"{' and '.join(int8_runs)} > {thresholds.max_batch_drift:g}"
        )
    parity = {
        "max_abs_logit_diff_tf_fp32": max(stage_diffs.values()),
        "max_abs_logit_diff_tf_by_stage": stage_diffs,
        "label_agreement_fp32_tf": float(np.mean(fp32_logits.argmax(1) == tf_logits.argmax(1))),
        "label_agreement_int8_fp32": min(agreements.values()),
        "label_agreement_int8_fp32_by_run": agreements,
        "accuracy_delta_int8_fp32": deltas[headline],
        "accuracy_delta_int8_fp32_by_run": deltas,
        "max_abs_logit_diff_fp32_int8_by_run": int8_diffs,
        "int8_headline_run": headline,
        "int8_batch_drift": drift,
        "thresholds": asdict(thresholds),
        "passed": not failures,
        "failures": failures,
    }
    report = {
        "tf": classification(tf_logits, labels),
        "fp32": fp32,
        "int8": int8_metrics[headline],
        "int8_by_run": int8_metrics,
        "parity": parity,
    }
    return GateReport(metrics=report, failures=failures, fp32_failed=fp32_failed)


def probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def batch_drift(runs: dict[str, np.ndarray]) -> float:
    """Largest |Δprob| of any text between any run and the first (0 for a single run)."""
    first, *others = (probabilities(logits) for logits in runs.values())
    return max((float(np.abs(p - first).max()) for p in others), default=0.0)
