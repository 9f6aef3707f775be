"""The HTTP layer: routes, request parsing and validation, auth, lifespan and observability.

`create_app(settings)` builds a Starlette app whose lifespan verifies and loads the bundle,
creates the one InferenceSession of the process, warms it up and only then reports ready.
Handlers validate the body (payload.py) on the event loop, tokenize there only when the
input is small, and hand inference to the scheduler (thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import platform
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from time import perf_counter
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batcher import Closed, DirectRunner, MicroBatcher, Overloaded, QueueTimeout, Scheduler
from service.bundle import Bundle, BundleError, load_bundle
from service.engine import EncodeError, Engine
from service.errors import EXCEPTION_HANDLERS, ApiError
from service.metrics import Metrics
from service.openapi import build_openapi
from service.payload import check_content_type, check_entities, parse_texts, read_body, render
from service.settings import Settings, available_cpus

log = logging.getLogger("service")
access_log = logging.getLogger("service.access")

VERSION = "0.1.0"
INLINE_TOKENIZE_CHARS = 1024  # ~0.4 ms of tokenizing; above it, a thread keeps the loop free
ROUTES = frozenset({"/predict", "/health", "/ready", "/metrics", "/info", "/openapi.json"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RETRY_AFTER = {"Retry-After": "1"}


class ServiceState:
    """What the lifespan loads and the handlers read; one per app."""

    def __init__(self, settings: Settings, bundle: Bundle | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.verified = bundle  # already verified by the caller: the lifespan skips re-hashing
        self.bundle: Bundle | None = None
        self.bundle_sha256 = ""
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.ready = False
        self.draining = False
        self.max_batch = settings.max_batch  # 1 when batching would change answers
        self.batch_drift: float | None = None
        self.api_key = settings.api_key.encode() if settings.api_key else None
        self._openapi: bytes | None = None
        self._info: bytes | None = None

    def openapi(self) -> bytes:
        if self._openapi is not None:
            return self._openapi
        labels = self.bundle.labels if self.bundle else None
        text_pair = self.bundle.text_pair if self.bundle else None
        body = json.dumps(build_openapi(self.settings, labels, VERSION, text_pair)).encode()
        if labels is not None:
            self._openapi = body
        return body

    def info(self) -> bytes:
        if self._info is None:
            assert self.bundle is not None
            settings = self.settings
            manifest = {k: v for k, v in self.bundle.manifest.items() if k != "files"}
            info = {
                "model_name": self.bundle.model_name,
                "labels": list(self.bundle.labels),
                "max_length": self.bundle.max_length,
                "text_pair": self.bundle.text_pair,
                "bundle_sha256": self.bundle_sha256,
                "manifest": manifest,
                "mode": settings.mode,
                "versions": _versions(),
                "limits": {
                    "max_texts": settings.max_texts,
                    "max_body_bytes": settings.max_body_bytes,
                    "queue_size": settings.queue_size,
                    "request_timeout_s": settings.request_timeout_s,
                },
                "runtime": {
                    "workers": settings.workers,
                    "threads": settings.threads,
                    "pool_size": settings.pool_size,
                    "spin": settings.spin,
                    "max_batch": self.max_batch,
                    "batch_drift": self.batch_drift,
                    "batch_tolerance": settings.batch_tolerance,
                    "max_tokens": settings.max_tokens,
                    "max_wait_ms": settings.max_wait_ms,
                },
            }
            self._info = json.dumps(info, ensure_ascii=False).encode()
        return self._info


def _versions() -> dict[str, str]:
    versions = {"service": VERSION, "python": platform.python_version()}
    for package in ("onnxruntime", "tokenizers", "numpy", "starlette", "uvicorn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status, headers=headers, media_type="application/json")


# --------------------------------------------------------------------------------- handlers


def _routes(state: ServiceState) -> list[Route]:
    settings = state.settings
    metrics = state.metrics

    def authorize(request: Request) -> None:
        if state.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, state.api_key):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def loaded() -> tuple[Engine, Scheduler]:
        if state.engine is None or state.scheduler is None:
            raise ApiError(503, "model is not loaded yet", type="not_ready", headers=RETRY_AFTER)
        return state.engine, state.scheduler

    def reject(reason: str, message: str) -> ApiError:
        metrics.rejected.labels(reason).inc()
        return ApiError(503, message, type=reason, headers=RETRY_AFTER)

    async def predict(request: Request) -> Response:
        authorize(request)
        engine, scheduler = loaded()
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_texts(body, settings.max_texts)
        check_entities(parsed, engine.text_pair)
        texts = parsed.texts
        if not scheduler.has_room(len(texts)):
            raise reject("overloaded", "server is at capacity, retry shortly")
        try:
            if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
                encoded = engine.encode(texts, parsed.entities)
            else:
                encoded = await asyncio.get_running_loop().run_in_executor(
                    None, engine.encode, texts, parsed.entities
                )
        except EncodeError as exc:
            raise ApiError(422, str(exc)) from None
        try:
            probs = await scheduler.predict([enc.ids for enc in encoded])
        except Overloaded:
            raise reject("overloaded", "server is at capacity, retry shortly") from None
        except QueueTimeout:
            raise reject("timeout", "request timed out waiting for the model") from None
        except Closed:
            raise reject("shutting_down", "server is shutting down") from None
        truncated = sum(enc.truncated for enc in encoded)
        if truncated:
            metrics.texts.labels("true").inc(truncated)
        metrics.texts.labels("false").inc(len(encoded) - truncated)
        predictions = render(engine.labels, probs, encoded)
        return _json(predictions[0] if parsed.single else {"predictions": predictions})

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(request: Request) -> Response:
        if state.draining:
            return _json({"status": "draining"}, 503)
        if not state.ready:
            return _json({"status": "loading"}, 503, RETRY_AFTER)
        return _json({"status": "ready"})

    async def metrics_route(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    async def info(request: Request) -> Response:
        authorize(request)
        loaded()
        return Response(state.info(), media_type="application/json")

    async def openapi(request: Request) -> Response:
        return Response(state.openapi(), media_type="application/json")

    return [
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


# ------------------------------------------------------------------------------- middleware


class ObserveMiddleware:
    """Counts, times and logs every HTTP request (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.metrics = state.metrics
        self.log_requests = state.settings.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            metrics.in_progress.dec()
            elapsed = perf_counter() - start
            path: str = scope["path"]
            route = path if path in ROUTES else "unmatched"
            method: str = scope["method"]
            metrics.requests.labels(route, method if method in METHODS else "other", status).inc()
            metrics.latency.labels(route).observe(elapsed)
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )


# -------------------------------------------------------------------------------- lifespan


def _make_scheduler(
    settings: Settings,
    engine: Engine,
    executor: ThreadPoolExecutor,
    metrics: Metrics,
    max_batch: int,
) -> Scheduler:
    common: dict[str, Any] = {
        "max_batch": max_batch,
        "max_tokens": settings.max_tokens,
        "queue_size": settings.queue_size,
        "timeout_s": settings.request_timeout_s,
        "observer": metrics,
    }
    if settings.mode == "direct":
        return DirectRunner(engine.infer, executor, **common)
    return MicroBatcher(
        engine.infer,
        executor,
        slots=settings.pool_size,
        max_wait_s=settings.max_wait_ms / 1000,
        **common,
    )


def _install_drain(state: ServiceState) -> dict[int, Any]:
    """On the first SIGTERM/SIGINT, turn /ready to 503, wait `drain_delay_s`, then let the
    server's own handler run (uvicorn: stop accepting, finish accepted requests, exit).
    Only in the main thread, and only over a Python-level handler (uvicorn's)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    loop = asyncio.get_running_loop()
    delay = state.settings.drain_delay_s
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        chained = signal.getsignal(sig)
        if not callable(chained):
            continue

        def handler(
            signum: int, frame: FrameType | None, chained: Callable[..., Any] = chained
        ) -> None:
            first = not state.draining
            state.draining = True
            if first:
                log.info("draining", extra={"signal": signum, "delay_s": delay})
            if first and delay > 0:
                loop.call_soon_threadsafe(loop.call_later, delay, chained, signum, frame)
            else:
                chained(signum, frame)

        previous[sig] = chained
        signal.signal(sig, handler)
    return previous


@contextlib.asynccontextmanager
async def _lifespan(state: ServiceState, app: Starlette) -> AsyncIterator[None]:
    settings = state.settings
    state.draining = False  # an app may be started again after a shutdown (tests do)
    try:
        bundle = state.verified
        if bundle is None:
            bundle = await asyncio.to_thread(load_bundle, settings.bundle, True)
        engine = await asyncio.to_thread(
            Engine, bundle, threads=settings.threads, spin=settings.spin
        )
        if settings.warmup:
            await asyncio.to_thread(engine.warmup, settings.max_batch, settings.max_tokens)
        drift = await asyncio.to_thread(engine.batch_drift)
    except BundleError as exc:
        log.critical("refusing to start: %s", exc)
        raise
    state.batch_drift = drift
    state.max_batch = settings.max_batch
    if drift > settings.batch_tolerance and settings.max_batch > 1:
        state.max_batch = 1
        log.warning(
            "batching changes this model's answers (max |dprob| %.3g > %.3g, e.g. dynamic int8 "
            "scales per batch): every text runs alone. Set SENTIMENT_BATCH_TOLERANCE to accept "
            "the drift, or export a batch-invariant model.",
            drift,
            settings.batch_tolerance,
        )
    state.metrics.drift.set(drift)
    busy = settings.workers * settings.pool_size * settings.threads
    if busy > available_cpus():
        log.warning(
            "workers x pool_size x threads = %d compute threads on %d cores: oversubscribed",
            busy,
            available_cpus(),
        )
    state.bundle, state.engine = bundle, engine
    state.bundle_sha256 = await asyncio.to_thread(lambda: bundle.sha256)
    executor = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="sentiment-infer")
    scheduler = _make_scheduler(settings, engine, executor, state.metrics, state.max_batch)
    scheduler.start()
    state.scheduler = scheduler
    state.metrics.model.labels(
        bundle.model_name, state.bundle_sha256, ",".join(bundle.labels), bundle.max_length,
        settings.mode,
    ).set(1)  # fmt: skip
    previous = _install_drain(state)
    state.ready = True
    log.info(
        "ready",
        extra={
            "model": bundle.model_name,
            "bundle_sha256": state.bundle_sha256,
            "max_batch": state.max_batch,
            "batch_drift": drift,
            "settings": settings.public(),
        },
    )
    try:
        yield
    finally:
        state.ready = False
        state.draining = True
        await scheduler.aclose()
        await asyncio.to_thread(executor.shutdown, True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        state.metrics.process_exited()
        log.info("stopped")


def create_app(settings: Settings, bundle: Bundle | None = None) -> Starlette:
    """The service as an ASGI app (the model loads when the app's lifespan starts). Pass
    `bundle` when it was just verified with `load_bundle`, so the model is hashed once."""
    state = ServiceState(settings, bundle)
    app = Starlette(
        routes=_routes(state),
        middleware=[Middleware(ObserveMiddleware, state=state)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lambda app: _lifespan(state, app),
    )
    app.state.service = state
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and worker processes: settings from the environment."""
    return create_app(Settings.from_env())
