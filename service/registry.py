"""The models one process serves: every configured bundle with its own engine and scheduler.

Built in the lifespan from `Settings.bundles` (the first is the default model). A handler looks
its request's model up once (`Registry.pick`, a dict lookup) and goes on with that model's
engine and scheduler, so a request never mixes models. The models share the process's thread
pool, i.e. its cores; each has its own queue, batch limit and drift decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from service import api
from service.bundle import Bundle, BundleError, load_bundle
from service.engine import Encoded, Engine, Probs
from service.metrics import Metrics, ModelMetrics
from service.scheduler import Scheduler
from service.schema import unknown_model
from service.settings import Settings

log = logging.getLogger("service")
LAYOUT_BUDGET_S = 0.6  # start-up measurement of the lone-run layouts, per model
LAYOUT_GAIN = 0.05  # the idle session is kept only if it is at least this much faster
VERSION_HEADER = b"x-model-version"
Header = tuple[bytes, bytes]


def version_header(name: str, sha256: str) -> Header:
    """`x-model-version: <name>@<first 12 hex of the bundle sha256>`, built once per model so
    a response only attaches it (a name's non-ASCII characters are percent-encoded)."""
    return VERSION_HEADER, f"{quote(name, safe='-._~+!*()')}@{sha256[:12]}".encode("ascii")


def utc_now() -> str:
    """ISO 8601, UTC, to the millisecond: when a model was loaded."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Model:
    """One loaded model name (`api.Model`: engine, labels, batching decision, rendering) and
    what the service adds to it: its scheduler, metrics and thread layout."""

    model: api.Model
    scheduler: Scheduler
    metrics: ModelMetrics
    sha256: str
    layout: dict[str, Any]  # threads per run alone and under load, and why
    loaded_at: str  # UTC ISO 8601: when this bundle was loaded, warmed and probed
    version: Header  # the x-model-version header of this name's answers

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def bundle(self) -> Bundle:
        return self.model.bundle

    @property
    def engine(self) -> Engine:
        return self.model.engine

    @property
    def labels(self) -> tuple[str, ...]:
        """What this name answers with: the bundle's labels, or a view's."""
        return self.model.labels

    @property
    def max_batch(self) -> int:
        """1 when batching would change this model's answers."""
        return self.model.max_batch

    @property
    def batch_drift(self) -> float:
        return self.model.batch_drift

    @property
    def view_of(self) -> str | None:
        """The bundle's own name when this name is one of its views."""
        return self.model.view_of

    def render(self, probs: Probs, encoded: list[Encoded]) -> list[dict[str, Any]]:
        """The predictions as this name answers them (a view's labels, renormalised)."""
        return self.model.render(probs, encoded)

    def views(self) -> list[Model]:
        """This bundle's views: the same engine, scheduler and metrics, other labels."""
        return [
            replace(self, model=view, version=version_header(view.name, self.sha256))
            for view in self.model.views()
        ]

    def publish(self) -> None:
        """Show this model in /metrics (model info and batch drift)."""
        self.metrics.loaded(self.bundle, self.sha256, self.batch_drift)

    def unpublish(self) -> None:
        """Take this model's info series out of /metrics (it was replaced)."""
        self.metrics.unloaded(self.bundle, self.sha256)

    def facts(self) -> dict[str, Any]:
        """What /info says about this model."""
        return {
            "name": self.name,
            "labels": list(self.labels),
            "view_of": self.view_of,
            "preprocess": self.bundle.preprocess,
            "max_length": self.bundle.max_length,
            "text_pair": self.bundle.text_pair,
            "bundle_sha256": self.sha256,
            "loaded_at": self.loaded_at,
            "manifest": {k: v for k, v in self.bundle.manifest.items() if k != "files"},
            "max_batch": self.max_batch,
            "batch_drift": self.batch_drift,
            "layout": self.layout,
        }


class Registry:
    """Model name -> Model, in configuration order; the first is the default."""

    def __init__(self, models: Sequence[Model]) -> None:
        if not models:
            raise ValueError("a registry needs at least one model")
        self.default = models[0]
        self.loaded = tuple(models)  # one per bundle: what owns a session and a scheduler
        named = [name for model in models for name in (model, *model.views())]
        self._by_name = {model.name: model for model in named}
        if len(self._by_name) != len(named):
            raise BundleError(f"two models or views share a name: {[m.name for m in named]}")
        self.names = tuple(self._by_name)

    def __iter__(self) -> Iterator[Model]:
        """Every name a request can pick: the bundles and their views."""
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def pick(self, name: str | None) -> Model:
        """The model a request named (the default when it named none); 422 for any other name,
        listing the loaded ones."""
        if name is None:
            return self.default
        model = self._by_name.get(name)
        if model is None:
            raise unknown_model(name, self.names)
        return model

    def full(self) -> bool:
        """No model has room for one more text: any request would be refused."""
        return not any(model.scheduler.has_room(1) for model in self.loaded)

    async def aclose(self) -> None:
        """Refuse new work everywhere, finish everything admitted."""
        await asyncio.gather(*(model.scheduler.aclose() for model in self.loaded))


def load_bundles(paths: Sequence[Path]) -> list[Bundle]:
    """Verify every bundle against its manifest; two bundles with one name are refused (a
    request could not tell them apart)."""
    bundles = [load_bundle(path, verify=True) for path in paths]
    seen: dict[str, Path] = {}
    for bundle in bundles:
        if bundle.model_name in seen:
            raise BundleError(
                f"two bundles are named {bundle.model_name!r} ({seen[bundle.model_name]} and "
                f"{bundle.path}): a model is named by its config.json 'model_name' (else its "
                "folder name); rename one"
            )
        seen[bundle.model_name] = bundle.path
    return bundles


async def build_registry(
    settings: Settings,
    bundles: Sequence[Bundle] | None,
    executor: Executor,
    metrics: Metrics,
) -> Registry:
    """Load, warm up and probe every model (one after the other: start-up memory peaks stay
    one model high). `bundles` were verified by the caller; None: verify `settings.bundles`."""
    if bundles is None:
        bundles = await asyncio.to_thread(load_bundles, settings.bundles)
    models = [await load_model(settings, bundle, executor, metrics) for bundle in bundles]
    for model in models:
        model.publish()
    return Registry(models)


async def load_model(
    settings: Settings, bundle: Bundle, executor: Executor, metrics: Metrics
) -> Model:
    """One verified bundle loaded, probed, warmed and scheduled, its blocking steps in threads
    (a reload runs this while the service answers). Not yet in /metrics: `Model.publish`."""
    idle = settings.idle_threads or settings.cores_per_worker
    model = await asyncio.to_thread(
        api.Model.from_bundle, bundle, threads=settings.threads, settings=settings,
        spin=settings.spin, idle_threads=idle,
    )  # fmt: skip
    engine, max_batch = model.engine, model.max_batch
    if settings.warmup:  # the shapes this model will run: a model that runs texts alone
        await asyncio.to_thread(engine.warmup, max_batch, settings.max_tokens)  # needs no batch
    layout = await asyncio.to_thread(choose_layout, settings, engine)
    sha256 = await asyncio.to_thread(lambda: bundle.sha256)
    observer = metrics.for_model(bundle.model_name)
    scheduler = make_scheduler(settings, engine, executor, observer, max_batch)
    version = version_header(bundle.model_name, sha256)
    return Model(model, scheduler, observer, sha256, layout, utc_now(), version)


def choose_layout(settings: Settings, engine: Engine) -> dict[str, Any]:
    """Threads for a lone run: pinned by SENTIMENT_IDLE_THREADS, or (auto) the idle session
    kept only if a short measurement on this machine finds it faster than one run's threads
    by more than `LAYOUT_GAIN` (a 2-thread run is slower than a 1-thread one without spinning,
    and machines differ). Under load every run uses `threads`."""
    layout: dict[str, Any] = {"loaded_threads": settings.threads}
    if engine.idle_session is None:
        why = "SENTIMENT_IDLE_THREADS=1" if settings.idle_threads == 1 else "one core per run"
        return {**layout, "alone_threads": engine.threads, "chosen_by": why}
    if settings.idle_threads:
        return {**layout, "alone_threads": engine.idle_threads, "chosen_by": "setting"}
    timings = engine.time_alone(LAYOUT_BUDGET_S)
    wide, narrow = timings[engine.idle_threads], timings[engine.threads]
    if wide > narrow * (1 - LAYOUT_GAIN):
        engine.drop_idle_session()
    return {
        **layout,
        "alone_threads": engine.idle_threads,
        "chosen_by": "measurement",
        "alone_p50_ms_by_threads": {str(k): v for k, v in timings.items()},
    }


def make_scheduler(
    settings: Settings,
    engine: Engine,
    executor: Executor,
    observer: ModelMetrics,
    max_batch: int,
) -> Scheduler:
    """The model's scheduler; a run alone takes the idle session only if the engine kept one."""
    return Scheduler(
        engine.infer,
        executor,
        max_batch=max_batch,
        max_tokens=settings.max_tokens,
        queue_size=settings.queue_size,
        timeout_s=settings.request_timeout_s,
        observer=observer,
        infer_alone=engine.infer_alone if engine.idle_session is not None else None,
    )
