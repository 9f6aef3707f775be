"""The load generator: a raw asyncio HTTP/1.1 client over keep-alive sockets, in a closed loop.

The client shares the CPU with the server it drives, so every microsecond it spends is one the
server does not get: requests are encoded once up front, responses are framed by hand, and the
loop runs on uvloop when present. Closed loop: `concurrency` workers each send the next request
as soon as the last one returns. Every run is bounded in time (per-request timeout, fixed
warm-up and measurement windows), and every non-2xx, malformed body, timeout or connection
failure is counted as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def build_requests(
    texts: Sequence[str],
    host: str,
    port: int,
    path: str = "/predict",
    headers: dict[str, str] | None = None,
    entities: Sequence[str] | None = None,
) -> list[bytes]:
    """Pre-encoded `POST {"text": ...}` requests (with `"entity"` for entity-pair models), so
    the client does no JSON work per request."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    out = []
    for i, text in enumerate(texts):
        document = {"text": text} if entities is None else {"text": text, "entity": entities[i]}
        body = json.dumps(document).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


class ProtocolError(ConnectionError):
    """The server's response could not be framed (no Content-Length, garbage status line)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.retry_after = 0.0  # the last response's Retry-After (seconds), 0 if none
        # The last response's head (lower-cased) and body, for callers that read more than the
        # status (which model version answered, say).
        self.head = b""
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        try:
            status = int(head[9:12])
            at = head.index(b"content-length:") + 15
            stop = head.find(b"\r\n", at)
            length = int(head[at : stop if stop >= 0 else None])
        except ValueError:
            self.waiter.set_exception(ProtocolError(f"unframed response: {head[:80]!r}"))
            self.close()
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self.head, self.body = head, body
        at = head.find(b"retry-after:")
        self.retry_after = 0.0
        if at >= 0:
            with contextlib.suppress(ValueError):
                stop = head.find(b"\r\n", at)
                self.retry_after = float(head[at + 12 : stop if stop >= 0 else None])
        if b"connection: close" in head:
            self.close()
        self.waiter.set_result((status, body))

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass(frozen=True)
class Load:
    """One closed-loop level as the client runs it: where, which requests (cycled through),
    how many workers, the warm-up and measured windows (s) and the per-request timeout (s)."""

    host: str
    port: int
    requests: Sequence[bytes]
    concurrency: int
    warmup: float
    duration: float
    timeout: float
    honour_retry_after: bool = False  # a refused client sleeps for the 503's Retry-After


@dataclass
class Tally:
    """What the workers saw inside the measurement window (and errors during warm-up)."""

    window_start: float = 0.0  # perf_counter seconds
    window_end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: Counter[str] = field(default_factory=Counter)
    unfinished: int = 0  # requests still waiting when the window closed (not counted)

    def record(self, sent: float, done: float, error: str | None) -> None:
        """Count one answer by when it came: in the window, or as a warm-up error before it;
        after the window, not at all."""
        if self.window_start <= done <= self.window_end:
            if error is None:
                self.latencies.append(done - sent)
            else:
                self.errors[error] += 1
        elif error is not None and done < self.window_start:
            self.warmup_errors[error] += 1


async def closed_loop(load: Load) -> Tally:
    """Run one level: `load.concurrency` workers until the window closes. The level ends with
    its window: nothing after it is counted, so nothing in flight is waited for."""
    return await _Workers(load).run()


class _Workers:
    """The workers of one closed loop and what they share: the tally, the next request's
    index, the requests in flight and every connection opened."""

    def __init__(self, load: Load) -> None:
        self.load = load
        start = time.perf_counter()
        self.tally = Tally(start + load.warmup, start + load.warmup + load.duration)
        self.sent = 0
        self.inflight = 0
        self.conns: list[_Connection] = []

    async def run(self) -> Tally:
        tasks = [asyncio.create_task(self.worker(i * 7919)) for i in range(self.load.concurrency)]
        await self.window_closed()
        self.tally.unfinished = self.inflight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self.conns:
            conn.close()
        return self.tally

    async def window_closed(self) -> None:
        """Return when the measurement window ends (a fixed one here)."""
        await asyncio.sleep(max(0.0, self.tally.window_end - time.perf_counter()))

    async def worker(self, offset: int) -> None:
        """Send the next request as soon as the last one returned, until the window closes."""
        requests = self.load.requests
        conn: _Connection | None = None
        while time.perf_counter() < self.tally.window_end:
            if conn is None or conn.closed:
                conn = await self.connect()
                if conn is None:
                    await asyncio.sleep(0.05)
                    continue
            payload = requests[(self.sent + offset) % len(requests)]
            self.sent += 1
            error = await self.exchange(conn, payload)
            if self.load.honour_retry_after and error == "http_503" and conn.retry_after > 0:
                await asyncio.sleep(conn.retry_after)  # a client that does what it is told
        if conn is not None:
            conn.close()

    async def connect(self) -> _Connection | None:
        """A new keep-alive connection, or None with the failure counted (in the window)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.load.timeout):
                _, conn = await loop.create_connection(_Connection, self.load.host, self.load.port)
        except (OSError, TimeoutError) as exc:
            self.connect_failed(f"connect:{type(exc).__name__}")
            return None
        self.conns.append(conn)
        return conn

    def connect_failed(self, kind: str) -> None:
        """Count a connection that could not be opened (in the window)."""
        if time.perf_counter() >= self.tally.window_start:
            self.tally.errors[kind] += 1

    async def exchange(self, conn: _Connection, payload: bytes) -> str | None:
        """One request and its answer, recorded; the error kind (None: a 200 with a label).
        A connection that failed is closed, for the worker to open another."""
        sent = time.perf_counter()
        self.inflight += 1
        try:
            async with asyncio.timeout(self.load.timeout):
                status, body = await conn.send(payload)
            error = None if status == 200 and b'"label"' in body else f"http_{status}"
        except TimeoutError:
            error = "timeout"
            conn.close()
        except (OSError, ConnectionError) as exc:
            error = f"conn:{type(exc).__name__}"
            conn.close()
        except Exception as exc:  # a client bug must show up as errors, not a silent stall
            error = f"client:{type(exc).__name__}"
            conn.close()
        finally:
            self.inflight -= 1
        self.tally.record(sent, time.perf_counter(), error)
        return error


def run_async(coro: Any) -> Any:
    """Run a coroutine on uvloop when installed (a cheaper client), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
