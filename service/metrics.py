"""Prometheus metrics of one app: HTTP traffic, queue, batches, inference and the model.

Each app owns its registry (tests create many apps in one process). With several uvicorn
workers, `python -m service` sets PROMETHEUS_MULTIPROC_DIR before any worker starts, so every
worker writes its samples to shared files and any worker's /metrics shows the sum over all
live workers (gauges: live sum; latency histograms: merged).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Metrics:
    """The service's metric families; also the batcher's `Observer`."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        registry = self.registry = CollectorRegistry()
        if not self.multiprocess:
            ProcessCollector(registry=registry)  # memory and CPU of this (only) process
        self.requests = Counter(
            "sentiment_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "sentiment_request_duration_seconds",
            "Time from request start to response end, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "sentiment_requests_in_progress",
            "HTTP requests being handled right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.depth = Gauge(
            "sentiment_queue_depth",
            "Texts admitted and not yet answered.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.wait = Histogram(
            "sentiment_queue_wait_seconds",
            "Time a request waited before its inference started.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "sentiment_inference_seconds",
            "Duration of one session.run (one batch).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "sentiment_batch_size",
            "Texts per session.run.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_tokens = Histogram(
            "sentiment_batch_tokens",
            "Padded tokens (rows x longest row) per session.run.",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.texts = Counter(
            "sentiment_texts", "Texts classified.", ["truncated"], registry=registry
        )
        self.rejected = Counter(
            "sentiment_rejected",
            "Predict requests refused because of load, by reason.",
            ["reason"],
            registry=registry,
        )
        self.drift = Gauge(
            "sentiment_batch_drift",
            "Max |Δprob| between probe texts run alone and batched (measured at start).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.model = Gauge(
            "sentiment_model_info",
            "The served model (value 1).",
            ["model_name", "bundle_sha256", "labels", "max_length", "mode"],
            registry=registry,
            multiprocess_mode="livemax",
        )

    # Observer (called from the event loop and from inference threads)
    def queue_depth(self, texts: int) -> None:
        self.depth.set(texts)

    def queue_wait(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def batch(self, rows: int, tokens: int, seconds: float) -> None:
        self.inference.observe(seconds)
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(tokens)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess:
            merged = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def process_exited(self) -> None:
        """Drop this worker's live gauges from the shared files (multiprocess mode)."""
        if self.multiprocess:
            prom_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
