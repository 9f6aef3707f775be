"""Prometheus metrics of one app: HTTP traffic, queue, batches, inference and the models.

Every series about a model carries a `model` label (the bundle's name); HTTP requests carry it
too once the handler knows the model (`model=""` otherwise: no model involved, or none chosen).
`ModelMetrics` binds one model's series once, so the hot path does no label lookups.

Each app owns its registry (tests create many apps in one process). With several uvicorn
workers, `python -m service` sets PROMETHEUS_MULTIPROC_DIR before any worker starts, so every
worker writes its samples to shared files and any worker's /metrics shows the sum over all
live workers (gauges: live sum; latency histograms: merged).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

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

from service.bundle import Bundle

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RUN_PATHS = ("alone", "loaded", "spare")  # the scheduler's names for how a session.run was taken
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
GaugeMode = Literal["livesum", "livemax"]


class Metrics:
    """The service's metric families (per model: `for_model`), defined by what they watch:
    HTTP traffic, the queue, inference runs, what became of the texts and requests, and what
    was loaded (in this order: the order /metrics lists them)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)  # memory and CPU of this (only) process
        self._define_http()
        self._define_queue()
        self._define_inference()
        self._define_outcomes()
        self._define_loaded()

    def _define_http(self) -> None:
        self.requests = self._counter(
            "sentiment_requests",
            "HTTP requests by route, method, status code and model (empty: none chosen).",
            ["route", "method", "status", "model"],
        )
        self.latency = self._histogram(
            "sentiment_request_duration_seconds",
            "Time from request start to response end, by route.",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.in_progress = self._gauge(
            "sentiment_requests_in_progress",
            "HTTP requests being handled right now.",
            [],
            "livesum",
        )

    def _define_queue(self) -> None:
        self.depth = self._gauge(
            "sentiment_queue_depth",
            "Texts admitted and not yet answered, per model.",
            ["model"],
            "livesum",
        )
        self.wait = self._histogram(
            "sentiment_queue_wait_seconds",
            "Time a request waited before its inference started.",
            ["model"],
            LATENCY_BUCKETS,
        )

    def _define_inference(self) -> None:
        self.inference = self._histogram(
            "sentiment_inference_seconds",
            "Duration of one session.run (one batch).",
            ["model"],
            LATENCY_BUCKETS,
        )
        self.batch_rows = self._histogram(
            "sentiment_batch_size", "Texts per session.run.", ["model"], BATCH_BUCKETS
        )
        self.batch_tokens = self._histogram(
            "sentiment_batch_tokens",
            "Padded tokens (rows x longest row) per session.run.",
            ["model"],
            TOKEN_BUCKETS,
        )
        self.runs = self._counter(
            "sentiment_inference_runs",
            "session.run calls by path: 'alone' (nothing else running or queued: the idle "
            "session's threads), 'loaded' (one thread per run) or 'spare' (a spare thread's run "
            "for a full queue, SENTIMENT_OVERLOAD_SPARE).",
            ["model", "path"],
        )

    def _define_outcomes(self) -> None:
        self.texts = self._counter("sentiment_texts", "Texts classified.", ["model", "truncated"])
        self.rejected = self._counter(
            "sentiment_rejected",
            "Predict requests refused because of load, by model and reason.",
            ["model", "reason"],
        )

    def _define_loaded(self) -> None:
        self.drift = self._gauge(
            "sentiment_batch_drift",
            "Max |Δprob| between probe texts run alone and batched (measured at start).",
            ["model"],
            "livemax",
        )
        self.model = self._gauge(
            "sentiment_model_info",
            "A served model name (value 1; model_name is its bundle's: a view's differs).",
            ["model", "model_name", "bundle_sha256", "labels", "max_length"],
            "livemax",
        )
        self.reloads = self._counter(
            "sentiment_reloads",
            "Model reloads (SIGHUP or POST /admin/reload) by outcome: ok (swapped in, or "
            "nothing changed) or failed (refused: the old models kept serving).",
            ["outcome"],
        )
        for outcome in ("ok", "failed"):  # both series from the start, at 0
            self.reloads.labels(outcome)

    def _counter(self, name: str, documentation: str, labels: Sequence[str]) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def _gauge(
        self, name: str, documentation: str, labels: Sequence[str], mode: GaugeMode
    ) -> Gauge:
        """`mode`: how the workers' values merge in multiprocess mode (live: dead ones drop)."""
        return Gauge(name, documentation, labels, registry=self.registry, multiprocess_mode=mode)

    def for_model(self, name: str) -> ModelMetrics:
        return ModelMetrics(self, name)

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


class ModelMetrics:
    """One model's series, labelled once; also its scheduler's `Observer` (called from the
    event loop and from inference threads)."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self._metrics = metrics
        self._depth = metrics.depth.labels(name)
        self._wait = metrics.wait.labels(name)
        self._inference = metrics.inference.labels(name)
        self._rows = metrics.batch_rows.labels(name)
        self._tokens = metrics.batch_tokens.labels(name)
        self._runs = {path: metrics.runs.labels(name, path) for path in RUN_PATHS}
        self._truncated = metrics.texts.labels(name, "true")
        self._whole = metrics.texts.labels(name, "false")

    def loaded(self, bundle: Bundle, sha256: str, drift: float) -> None:
        """Publish what was loaded: model info (the bundle and each of its views) and the
        measured batch drift."""
        for info in self._infos(bundle, sha256):
            self._metrics.model.labels(*info).set(1)
        self._metrics.drift.labels(self.name).set(drift)

    def unloaded(self, bundle: Bundle, sha256: str) -> None:
        """Retract a replaced bundle's model info: removed, or 0 in multiprocess mode (where
        series cannot be removed; another worker may still serve it: the live max says so)."""
        for info in self._infos(bundle, sha256):
            if self._metrics.multiprocess:
                self._metrics.model.labels(*info).set(0)
            else:
                self._metrics.model.remove(*info)

    def _infos(self, bundle: Bundle, sha256: str) -> list[tuple[str, ...]]:
        """The model info labels of the bundle and each of its views."""
        return [
            (name, bundle.model_name, sha256, ",".join(labels), str(bundle.max_length))
            for name, labels in ((self.name, bundle.labels), *bundle.views.items())
        ]

    def queue_depth(self, texts: int) -> None:
        self._depth.set(texts)

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def batch(self, rows: int, tokens: int, seconds: float, path: str = "loaded") -> None:
        self._runs[path].inc()
        self._inference.observe(seconds)
        self._rows.observe(rows)
        self._tokens.observe(tokens)

    def texts(self, total: int, truncated: int) -> None:
        if truncated:
            self._truncated.inc(truncated)
        self._whole.inc(total - truncated)

    def rejected(self, reason: str) -> None:
        self._metrics.rejected.labels(self.name, reason).inc()
