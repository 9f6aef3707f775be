"""uvicorn's httptools protocol plus the one timeout it lacks, and one send per response.

uvicorn writes a response's status line and headers when the app sends `http.response.start`
and the body in a second write: two sends, and a client that wakes twice. Here a write is held
until the next one (the body: both leave as one send) or the end of the loop iteration (a
streamed response's headers are not held longer). Side by side (`--pair`), one send was faster
at one user and at 500 users (reports/experiments.md).

uvicorn times out idle keep-alive connections, and the app times out slow bodies
(`SENTIMENT_BODY_TIMEOUT_S`), but a client that opens a connection and sends nothing, or half a
request line, or headers one byte a minute (slowloris), is held until it leaves; thousands of
them take every connection slot (`SENTIMENT_MAX_CONNECTIONS`). Here a connection whose request
headers are not complete within `SENTIMENT_HEADER_TIMEOUT_S` is closed: with a 408 if it had
started a request, silently if it never sent a byte (HTTP/1.1 allows both).

While the models are full, a `POST /predict` is refused here, once its headers are in, with the
app's own 503 (service/refusal.py): no ASGI cycle, task or Starlette request for it.

uvicorn's graceful shutdown closes an idle keep-alive connection at once, so a request already on
its way there is lost, and the client cannot tell whether it ran (a POST is not retried). Here an
idle connection stays open for `IDLE_GRACE_S`: a request that arrives is answered with
`connection: close`, and a connection that sends nothing is closed after the grace.

A request whose body is all in when the app reads it (a tweet's request is one packet) is marked
in its scope (`BODY_RECEIVED`): the app then reads it without arming the body timeout, a timer
per request that nothing could fire.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_body
from service.refusal import STATE_KEY, Refusal, is_predict

BODY = error_body("request_timeout", "request headers not received in time")
BODY_RECEIVED = "sentiment.body_received"  # scope key: the whole body is in the cycle's buffer
IDLE_GRACE_S = 0.5  # at shutdown, for a request on its way on an idle connection (> one RTT)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + BODY
)


class _NoEvent:
    def set(self) -> None:
        pass


class _Answered:
    """Stands in for uvicorn's request cycle once the protocol has answered a request itself:
    complete, so the body that follows is parsed and dropped, and nothing waits on it."""

    response_complete = True
    keep_alive = False
    message_event = _NoEvent()


ANSWERED: Any = _Answered()


class CoalescingTransport(asyncio.Transport):
    """A transport whose consecutive writes within one loop iteration leave as one send."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        chunk = data if isinstance(data, bytes) else bytes(data)
        if self._held:  # the write that follows (the body after the headers): one send now
            self._held.append(chunk)
            self.flush()
            return
        self._held.append(chunk)
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


def header_timeout_protocol(header_timeout_s: float) -> Callable[..., asyncio.Protocol]:
    """What uvicorn's `http=` takes: it calls this for each connection (a partial pickles, so
    worker processes get it with the config)."""
    return functools.partial(HeaderTimeoutProtocol, header_timeout_s=header_timeout_s)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Starts a timer when a connection opens and when a request begins; complete headers
    stop it. Everything else is uvicorn's."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._started = False  # a request has begun on this connection, its headers not in
        self._refusal: Refusal | None = None
        self._closing = False  # the server is shutting down: answer, then close
        self._grace: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the socket's own transport
        self.transport = CoalescingTransport(transport, self.loop)
        self._refusal = self.app_state.get(STATE_KEY)  # set by the lifespan; absent in tests
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._started = True
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._started = False
        if not self._refused():
            super().on_headers_complete()
            if self._closing and self.cycle is not None:
                self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """uvicorn's, but an idle connection is closed only after `IDLE_GRACE_S`."""
        self._closing = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif self._grace is None and not self.transport.is_closing():
            self._grace = self.loop.call_later(IDLE_GRACE_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._grace = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.cycle.response_complete:  # a request the app reads (not one refused here)
            self.cycle.scope[BODY_RECEIVED] = True  # type: ignore[literal-required]

    def _refused(self) -> bool:
        """Answered a `/predict` with the overload refusal, if the models are full."""
        refusal = self._refusal
        if refusal is None or not is_predict(self.parser.get_method(), self.url):
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a request being answered: answers keep their order
        keep_alive = (
            not self._closing
            and self.parser.should_keep_alive()
            and not self.expect_100_continue
            and _body_fits(self.headers, refusal.max_body_bytes)
        )
        answer = refusal.response(keep_alive)
        if answer is None:
            return False
        data, keep = answer
        self.cycle = ANSWERED
        self.transport.write(data)
        if keep:
            self.on_response_complete()
        else:
            self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._grace is not None:
            self._grace.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: its own timeouts apply
        if self.transport.is_closing():
            return
        if self._started:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def _body_fits(headers: list[tuple[bytes, bytes]], limit: int) -> bool:
    """A body the connection can read past cheaply: a declared length within the app's limit
    (a chunked or oversized one would be read only to be dropped: the connection closes)."""
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= limit
        if name == b"transfer-encoding":
            return False
    return True
