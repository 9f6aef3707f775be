"""Reloading the served models in place, without a restart (SIGHUP or POST /admin/reload).

The configured bundle folders (`Settings.bundles`) are read again and each is verified against
its manifest as at start-up. A bundle whose manifest is byte-identical to the served one's (same
sha256; its files verified) keeps its loaded model. Every other bundle is loaded, probed and
warmed with the start-up steps (`registry.load_model`, blocking work in threads, so the service
goes on answering), and only then are the new models swapped in, all at once: one assignment
on the event loop, so a request sees the old set or the new one, never a mix.

A request that chose an old model finishes on it (it holds the model object); the old model is
released when the last of them is done. A bundle that fails (its files, manifest, model, or a
model name that would change: clients and the request schema depend on the names) leaves every
old model serving: the reload is refused as a whole, logged with the bundle and the reason, and
counted (`sentiment_reloads_total{outcome}`). Reloads run one at a time, in the order asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.bundle import Bundle, BundleError
from service.registry import Model, Registry, load_bundles, load_model
from service.schema import Reloaded, ReloadedModel

if TYPE_CHECKING:  # app.py imports this module for its admin route
    from service.app import ServiceState

log = logging.getLogger("service")


class ReloadFailed(Exception):
    """A reload refused because of one bundle; the old models keep serving."""

    def __init__(self, bundle: Path, reason: str) -> None:
        named = str(bundle) in reason  # BundleError's messages name the folder already
        super().__init__(reason if named else f"bundle {bundle}: {reason}")
        self.bundle = bundle
        self.reason = reason


class Reloader:
    """Reloads one app's models: one at a time, each new model warm before it is served."""

    def __init__(self, state: ServiceState, executor: Executor) -> None:
        self.state = state
        self.executor = executor  # the inference pool the new schedulers share
        self.retiring: list[Model] = []  # replaced models still answering what they admitted
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def request(self) -> asyncio.Task[Reloaded]:
        """A reload (after any running one) as a task of its own: a client that hangs up
        cannot cut it short between loading and swapping."""
        return self._spawn(self.reload())

    def on_signal(self) -> None:
        """SIGHUP: reload; the outcome is logged and counted, as for the endpoint."""
        if self.state.draining:
            log.info("SIGHUP ignored: draining")
            return
        log.info("reload asked", extra={"signal": "SIGHUP"})
        self.request()

    async def reload(self) -> Reloaded:
        """Read, verify, load and warm the configured bundles, then swap in the new ones;
        raises ReloadFailed (the old models keep serving)."""
        async with self._lock:
            try:
                result = await self._reload()
            except Exception as exc:
                self.state.metrics.reloads.labels("failed").inc()
                if isinstance(exc, ReloadFailed):
                    why = {"bundle": str(exc.bundle), "reason": exc.reason}
                    log.error("reload refused, the old models keep serving: %s", exc, extra=why)
                raise
            self.state.metrics.reloads.labels("ok").inc()
            return result

    async def aclose(self) -> None:
        """Shutdown: stop the reloads not yet swapped in, then finish what every replaced
        model admitted."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(model.scheduler.aclose() for model in self.retiring))

    async def _reload(self) -> Reloaded:
        registry = self.state.registry
        assert registry is not None, "reloads start once the models are served"
        served = registry.loaded
        paths = self.state.settings.bundles
        changed = [await self._verify(path, old) for path, old in zip(paths, served, strict=True)]
        fresh = [
            old if bundle is None else await self._load(path, bundle)
            for path, old, bundle in zip(paths, served, changed, strict=True)
        ]
        replaced = [(old, new) for old, new in zip(served, fresh, strict=True) if new is not old]
        if not replaced:
            log.info("reload: every bundle unchanged")
            return _result(registry, set())
        serving = Registry(fresh)
        self._swap(serving, replaced)
        news = [{"model": new.name, "bundle_sha256": new.sha256} for _, new in replaced]
        log.info("reloaded", extra={"models": news})
        return _result(serving, {new.name for _, new in replaced})

    async def _verify(self, path: Path, old: Model) -> Bundle | None:
        """The bundle at `path`, verified as at start-up; None when it is the one served."""
        try:
            bundle, sha256 = await asyncio.to_thread(_read, path)
        except BundleError as exc:
            raise ReloadFailed(path, str(exc)) from None
        names = (bundle.model_name, *sorted(bundle.views))
        before = (old.name, *sorted(old.bundle.views))
        if names != before:
            raise ReloadFailed(
                path,
                f"it would serve {list(names)} instead of {list(before)}: clients and the "
                "request schema depend on the model names, so a rename needs a restart",
            )
        return None if sha256 == old.sha256 else bundle

    async def _load(self, path: Path, bundle: Bundle) -> Model:
        """Load, probe and warm a new bundle (threads); any failure refuses the reload."""
        state = self.state
        try:
            return await load_model(state.settings, bundle, self.executor, state.metrics)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
            raise ReloadFailed(path, f"bundle {path} could not be loaded: {reason}") from exc

    def _swap(self, registry: Registry, replaced: list[tuple[Model, Model]]) -> None:
        """Serve `registry` from now on (no await here: no request sees half of it)."""
        self.state.load(registry)
        for old, new in replaced:
            old.unpublish()
            new.publish()
            self._retire(old)

    def _retire(self, old: Model) -> None:
        """Keep watching `old` until what it admitted is answered, then let it go."""
        self.retiring.append(old)

        async def retire() -> None:
            await old.scheduler.drained()
            self.retiring.remove(old)
            log.info("retired", extra={"model": old.name, "bundle_sha256": old.sha256})

        self._spawn(retire())

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished task; log one that failed unexpectedly (a refusal is logged)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ReloadFailed):
            log.error("reload failed unexpectedly, the old models keep serving", exc_info=exc)


def _read(path: Path) -> tuple[Bundle, str]:
    """Verify one bundle as start-up does; its identity (manifest sha256)."""
    [bundle] = load_bundles([path])
    return bundle, bundle.sha256


def _result(registry: Registry, changed: set[str]) -> Reloaded:
    """Every name served now, and whether this reload replaced its bundle."""
    models = [
        ReloadedModel(m.name, m.sha256, m.loaded_at, (m.view_of or m.name) in changed)
        for m in registry
    ]
    return Reloaded(bool(changed), models)
