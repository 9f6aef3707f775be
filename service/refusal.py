"""Refuse a `/predict` at the HTTP protocol, before any ASGI work, while the models are full.

An overloaded service answers most requests with 503. Through the app, each refusal built a
scope, a task, a Starlette request, the middleware, the router and an exception response: about
as much CPU as the answer it protected. Here the protocol asks `Refusal.response()` once the
request headers are in; while every model is full it writes these bytes and ignores the body,
and the connection stays open for the client's next try (closed when the client asked so, sent
`Expect: 100-continue` or an oversized or chunked body, or when the wait outlasts keep-alive).
The body, the status and `Retry-After` are the app's own (`app._reject`), so a client cannot
tell which layer refused it; the refusal is counted in the same metrics with the model label
of the app's pre-read refusal (the default model; `model=""` on the request counter), but it
is neither timed in the latency histogram nor access-logged: at thousands per second those
lines and samples would cost what this path saves, and the counters keep the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.asgi import PREDICT
from service.errors import error_body

if TYPE_CHECKING:
    from service.app import ServiceState
    from service.registry import Model

STATE_KEY = "sentiment.refusal"  # where the lifespan hands it to the protocol (ASGI state)
PATH = PREDICT.encode()
REASON = "overloaded"
MESSAGE = "server is at capacity, retry shortly"
BODY = error_body(REASON, MESSAGE)
HEAD = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\nretry-after: "
)


def refused(state: ServiceState, model: Model, reason: str) -> tuple[str, bool]:
    """Count one refusal (the app's or the connection's): the `Retry-After` value, and whether
    the connection must close (a wait past keep-alive: the server would close it as idle just
    as the client sends its retry, a reset)."""
    model.metrics.rejected(reason)
    wait = state.retry_after.refused()
    return wait, int(wait) >= state.settings.keepalive_s


def is_predict(method: bytes, url: bytes) -> bool:
    """`POST /predict`, with or without a query string."""
    return method == b"POST" and url.partition(b"?")[0] == PATH


class Refusal:
    """The app's admission state as the protocol sees it: full or not, and the bytes to send."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state
        self.max_body_bytes = state.settings.max_body_bytes
        self._requests = state.metrics.requests.labels(PREDICT, "POST", 503, "")

    def response(self, keep_alive: bool) -> tuple[bytes, bool] | None:
        """The refusal and whether the connection stays open, or None to let the app answer
        (not loaded yet, draining, or a model has room: the app's own checks decide)."""
        state = self._state
        registry = state.registry
        if registry is None or state.draining or not registry.full():
            return None
        self._requests.inc()
        wait, close = refused(state, registry.default, REASON)
        keep = keep_alive and not close
        tail = b"\r\n\r\n" if keep else b"\r\nconnection: close\r\n\r\n"
        return HEAD + wait.encode() + tail + BODY, keep
