"""The ASGI layers around the routes: every request observed, and `POST /predict` straight to
its handler.

Starlette's stack (its two exception middlewares, the router, the route's request/response
wrapper and its exception wrapper) costs about 55 µs of the event loop's time per request
with inference taken out (reports/experiments.md, fourteenth session), against a few µs for
the one call it makes for the product's only hot route. `PredictFirst` makes that call itself
and converts errors with the same handlers; every other request, and any other method on
`/predict`, still takes Starlette's stack.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter, time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, api_error, unexpected
from service.logs import AccessEntry, access_writer
from service.metrics import Metrics

access_log = logging.getLogger("service.access")

PREDICT = "/predict"
ROUTES = frozenset({PREDICT, "/health", "/ready", "/metrics", "/info", "/openapi.json", "/docs"})
ADMIN_ROUTES = frozenset({"/admin/reload"})  # routed only when an API key is set
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MODEL_KEY = "sentiment.model"  # scope key: the handler's chosen model, for the request counter

Endpoint = Callable[[Request], Awaitable[Response]]


class PredictFirst:
    """`POST /predict` to `predict` directly (errors as the registered handlers answer them);
    everything else to `app`, Starlette's own stack."""

    def __init__(self, app: ASGIApp, predict: Endpoint) -> None:
        self.app = app
        self.predict = predict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.predict(request)
        except ApiError as exc:
            response = await api_error(request, exc)
        except Exception as exc:  # logged once, answered as JSON like any other route's
            response = await unexpected(request, exc)
        await response(scope, receive, send)


class ObserveMiddleware:
    """Counts, times and logs every HTTP request (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool, admin: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.write_access = access_writer(access_log)  # built after logging is configured
        self._series: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}
        self.routes = ROUTES | ADMIN_ROUTES if admin else ROUTES  # admin: an API key is set

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
            route = path if path in self.routes else _unlisted(path)
            method: str = scope["method"]
            verb = method if method in METHODS else "other"
            self._count((route, verb, status, scope.get(MODEL_KEY, "")), elapsed)
            if self.log_requests:
                client = scope.get("client")
                ip = client[0] if client else None
                self._log(AccessEntry(time(), method, path, status, round(elapsed * 1000, 2), ip))

    def _count(self, key: tuple[str, str, int, str], elapsed: float) -> None:
        """The request counter and latency histogram, through series bound once per label set
        (a `labels()` lookup per request costs more than the increment)."""
        series = self._series.get(key)
        if series is None:
            metrics = self.metrics
            series = (metrics.requests.labels(*key), metrics.latency.labels(key[0]))
            self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)

    def _log(self, entry: AccessEntry) -> None:
        if self.write_access is not None:  # the JSON-lines writer, without a LogRecord
            self.write_access(entry)
        elif access_log.isEnabledFor(logging.INFO):
            fields = entry._asdict()
            del fields["created"]
            access_log.info("request", extra=fields)


def _unlisted(path: str) -> str:
    """The metrics label of a path that is not a route of its own."""
    return "/docs/assets" if path.startswith("/docs/assets/") else "unmatched"
