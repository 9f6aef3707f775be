"""The HTTP layer: routes, request parsing and validation, auth and observability.

`create_app(settings)` builds a Starlette app whose lifespan (lifecycle.py) verifies and loads every
configured bundle into the model registry (registry.py: one engine, session and scheduler per
model, one shared thread pool), warms them up and only then reports ready. Handlers validate
the body (payload.py) on the event loop, pick the request's model once, tokenize on the loop
only when the input is small, and hand inference to that model's scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from service.asgi import MODEL_KEY, PREDICT, ObserveMiddleware, PredictFirst
from service.backoff import RetryAfter
from service.bundle import Bundle
from service.docs import docs_routes
from service.engine import Encoded, EncodeError, Engine, Probs
from service.errors import EXCEPTION_HANDLERS, ApiError
from service.lifecycle import Supervisor, lifespan
from service.metrics import Metrics
from service.openapi import ModelDoc, build_openapi
from service.payload import check_content_type, check_entities, read_body
from service.refusal import MESSAGE, REASON, refused
from service.registry import Model, Registry
from service.reload import Reloader, ReloadFailed
from service.scheduler import Closed, Overloaded, QueueTimeout
from service.schema import Parsed, Schema
from service.settings import Settings

VERSION = "0.1.0"
INLINE_TOKENIZE_CHARS = 1024  # ~0.4 ms of tokenizing; above it, a thread keeps the loop free
RETRY_AFTER = {"Retry-After": "1"}  # not loaded yet (an overload gets `state.retry_after`)


class ServiceState:
    """What the lifespan loads and the handlers read; one per app."""

    def __init__(
        self,
        settings: Settings,
        bundles: Sequence[Bundle] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor or Supervisor()
        self.failed: str | None = None  # why the service can no longer answer
        self.metrics = Metrics()
        self.retry_after = RetryAfter()  # grows with the overload (service/backoff.py)
        self.verified = bundles  # already verified by the caller: the lifespan skips re-hashing
        self.registry: Registry | None = None
        self.schema: Schema | None = None  # the request types of the loaded models
        self.reloader: Reloader | None = None  # set by the lifespan once the models serve
        self.ready = False
        self.draining = False
        self.api_key = settings.api_key.encode() if settings.api_key else None
        self._openapi: bytes | None = None
        self._info: bytes | None = None

    def load(self, registry: Registry) -> None:
        """Serve `registry`'s models: validate requests with their schema, and describe them
        anew in /info and /openapi.json (a reload replaces them)."""
        self.registry = registry
        self.schema = Schema(self.settings.max_texts, model_docs(registry))
        self._openapi = self._info = None

    def openapi(self) -> bytes:
        if self._openapi is not None:
            return self._openapi
        docs = None if self.registry is None else model_docs(self.registry)
        body = json.dumps(build_openapi(self.settings, VERSION, docs)).encode()
        if docs is not None:
            self._openapi = body
        return body

    def info(self) -> bytes:
        if self._info is None:
            assert self.registry is not None
            info = _info(self.settings, self.registry)
            self._info = json.dumps(info, ensure_ascii=False).encode()
        return self._info


def model_docs(registry: Registry) -> list[ModelDoc]:
    return [ModelDoc(m.name, m.labels, m.bundle.text_pair) for m in registry]


def _info(settings: Settings, registry: Registry) -> dict[str, Any]:
    """/info: every model under `models`; the top-level model fields (model_name, labels,
    text_pair, ...; runtime.max_batch and batch_drift) describe the default model, as they
    did when the service had only one."""
    default = registry.default.facts()
    return {
        "model_name": default["name"],
        **{k: default[k] for k in ("labels", "max_length", "text_pair", "bundle_sha256")},
        "manifest": default["manifest"],
        "default_model": default["name"],
        "models": [model.facts() for model in registry],
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
            "max_batch": default["max_batch"],
            "batch_drift": default["batch_drift"],
            "batch_tolerance": settings.batch_tolerance,
            "max_tokens": settings.max_tokens,
        },
    }


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


class Handlers:
    """The routes' endpoints as methods bound to one app's `ServiceState`: a request finds its
    state without a lookup, and a test can build them around a state of its own."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.settings = state.settings
        self.metrics = state.metrics

    def routes(self) -> list[Route]:
        return [
            Route(PREDICT, self.predict, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics_route, methods=["GET"]),
            Route("/info", self.info, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *docs_routes(),
            *self.admin_routes(),
        ]

    def admin_routes(self) -> list[Route]:
        """Only behind an API key: without one, /admin/reload is a 404 like any unknown path."""
        if self.state.api_key is None:
            return []
        return [Route("/admin/reload", self.reload, methods=["POST"])]

    def authorize(self, request: Request) -> None:
        api_key = self.state.api_key
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, api_key):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def loaded(self) -> tuple[Registry, Schema]:
        state = self.state
        if state.registry is None or state.schema is None:
            raise ApiError(503, "models are not loaded yet", type="not_ready", headers=RETRY_AFTER)
        return state.registry, state.schema

    async def predict(self, request: Request) -> Response:
        state, settings = self.state, self.settings
        self.authorize(request)
        registry, schema = self.loaded()
        check_content_type(request.headers.get("content-type"))
        if registry.full():  # overloaded: refuse before reading, parsing or tokenizing
            raise _reject(state, registry.default, REASON, MESSAGE)
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        parsed = schema.parse(body)
        model = registry.pick(parsed.model)
        request.scope[MODEL_KEY] = model.name
        check_entities(parsed, model.engine.text_pair, model.name)
        if not model.scheduler.has_room(len(parsed.texts)):
            raise _reject(state, model, REASON, MESSAGE)
        encoded = await _encode(model.engine, parsed)
        probs = await _infer(state, model, encoded)
        state.retry_after.answered()
        model.metrics.texts(len(encoded), sum(enc.truncated for enc in encoded))
        predictions = model.render(probs, encoded)
        if parsed.single:
            predictions[0]["model"] = model.name
            response = _json(predictions[0])
        else:
            response = _json({"model": model.name, "predictions": predictions})
        response.raw_headers.append(model.version)  # x-model-version, built at load time
        return response

    async def health(self, request: Request) -> Response:  # liveness: 503 once it cannot answer
        state = self.state
        if state.failed:
            return _json({"status": "failed", "reason": state.failed}, 503)
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:  # ready: every model loaded and warm
        state = self.state
        if state.failed:
            return _json({"status": "failed", "reason": state.failed}, 503)
        if state.draining:
            return _json({"status": "draining"}, 503)
        if not state.ready:
            return _json({"status": "loading"}, 503, RETRY_AFTER)
        return _json({"status": "ready"})

    async def metrics_route(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    async def info(self, request: Request) -> Response:
        self.authorize(request)
        self.loaded()
        return Response(self.state.info(), media_type="application/json")

    async def openapi(self, request: Request) -> Response:
        return Response(self.state.openapi(), media_type="application/json")

    async def reload(self, request: Request) -> Response:
        """Reload the configured bundles (service/reload.py); 409 if one is refused."""
        self.authorize(request)
        reloader = self.state.reloader
        if reloader is None:
            raise ApiError(503, "models are not loaded yet", type="not_ready", headers=RETRY_AFTER)
        if self.state.draining:
            raise ApiError(503, "server is shutting down", type="shutting_down")
        try:  # shielded: a client that hangs up does not cancel the reload
            result = await asyncio.shield(reloader.request())
        except ReloadFailed as exc:
            message = f"reload refused, the old models keep serving: {exc}"
            raise ApiError(409, message, type="reload_failed") from None
        except Exception:  # logged once by the reloader
            raise ApiError(500, "internal error (logged on the server)") from None
        return Response(msgspec.json.encode(result), media_type="application/json")


def _reject(state: ServiceState, model: Model, reason: str, message: str) -> ApiError:
    wait, close = refused(state, model, reason)
    headers = {"Retry-After": wait, **({"Connection": "close"} if close else {})}
    return ApiError(503, message, type=reason, headers=headers)


async def _encode(engine: Engine, parsed: Parsed) -> list[Encoded]:
    """Token ids; a tweet is tokenized on the loop, a large input in a thread."""
    try:
        if sum(map(len, parsed.texts)) <= INLINE_TOKENIZE_CHARS:
            return engine.encode(parsed.texts, parsed.entities)
        return await asyncio.get_running_loop().run_in_executor(
            None, engine.encode, parsed.texts, parsed.entities
        )
    except EncodeError as exc:
        raise ApiError(422, str(exc)) from None


async def _infer(state: ServiceState, model: Model, encoded: list[Encoded]) -> Probs:
    try:
        return await model.scheduler.predict([enc.ids for enc in encoded])
    except Overloaded:
        raise _reject(state, model, REASON, MESSAGE) from None
    except QueueTimeout:
        raise _reject(state, model, "timeout", "request timed out waiting for the model") from None
    except Closed:
        raise _reject(state, model, "shutting_down", "server is shutting down") from None


def create_app(
    settings: Settings,
    bundles: Sequence[Bundle] | None = None,
    supervisor: Supervisor | None = None,
) -> Starlette:
    """The service as an ASGI app (the models load when the app's lifespan starts). Pass
    `bundles` (one per `settings.bundles`) when they were just verified with
    `registry.load_bundles`, so each model is hashed once."""
    state = ServiceState(settings, bundles, supervisor)
    return Service(state, Handlers(state))


class Service(Starlette):
    """Starlette with every request observed first and `POST /predict` sent straight to its
    handler (service/asgi.py); the other routes take Starlette's stack."""

    def __init__(self, state: ServiceState, handlers: Handlers) -> None:
        super().__init__(
            routes=handlers.routes(),
            exception_handlers=EXCEPTION_HANDLERS,
            lifespan=lambda app: lifespan(state, app),
        )
        self.state.service = state
        self.predict = handlers.predict

    def build_middleware_stack(self) -> ASGIApp:
        stack = PredictFirst(super().build_middleware_stack(), self.predict)
        state: ServiceState = self.state.service
        admin = state.api_key is not None
        return ObserveMiddleware(stack, state.metrics, state.settings.access_log, admin)


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and worker processes: settings from the environment."""
    return create_app(Settings.from_env())
