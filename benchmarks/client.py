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


@dataclass
class Tally:
    """What the workers saw inside the measurement window (and errors during warm-up)."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: Counter[str] = field(default_factory=Counter)


async def closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float,
    honour_retry_after: bool = False,
) -> tuple[Tally, float, float, int]:
    loop = asyncio.get_running_loop()
    tally = Tally()
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    counter = 0
    inflight = 0
    conns: list[_Connection] = []

    async def worker(offset: int) -> None:
        nonlocal counter, inflight
        conn: _Connection | None = None
        while time.perf_counter() < window_end:
            if conn is None or conn.closed:
                try:
                    async with asyncio.timeout(timeout):
                        _, conn = await loop.create_connection(_Connection, host, port)
                    conns.append(conn)
                except (OSError, TimeoutError) as exc:
                    if time.perf_counter() >= window_start:
                        tally.errors[f"connect:{type(exc).__name__}"] += 1
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
            payload = requests[(counter + offset) % len(requests)]
            counter += 1
            sent = time.perf_counter()
            inflight += 1
            try:
                async with asyncio.timeout(timeout):
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
                inflight -= 1
            done = time.perf_counter()
            if window_start <= done <= window_end:
                if error is None:
                    tally.latencies.append(done - sent)
                else:
                    tally.errors[error] += 1
            elif error is not None and done < window_start:
                tally.warmup_errors[error] += 1
            if honour_retry_after and error == "http_503" and conn.retry_after > 0:
                await asyncio.sleep(conn.retry_after)  # a client that does what it is told
        if conn is not None:
            conn.close()

    tasks = [asyncio.create_task(worker(i * 7919)) for i in range(concurrency)]
    await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
    unfinished = inflight  # requests still waiting when the window closed (not counted)
    # The level ends with its window: nothing after it is counted, so nothing is waited for.
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in conns:
        conn.close()
    return tally, window_start, window_end, unfinished


def run_async(coro: Any) -> Any:
    """Run a coroutine on uvloop when installed (a cheaper client), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
