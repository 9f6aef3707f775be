"""Latency summaries shared by the engine and HTTP benchmarks, so both report the same way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, median, p95, p99 and max in milliseconds (None when nothing was measured).

    p99 of fewer than 100 samples is reported anyway but is close to the max; `n` says how
    much to trust it.
    """
    if not seconds:
        return {
            "n": 0,
            "mean_ms": None,
            "p50_ms": None,
            "p95_ms": None,
            "p99_ms": None,
            "max_ms": None,
        }
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": len(ms),
        "mean_ms": round(float(ms.mean()), 3),
        "p50_ms": round(float(p50), 3),
        "p95_ms": round(float(p95), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(ms.max()), 3),
    }
