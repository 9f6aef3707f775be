"""A steady closed-loop load that runs in the background while scenarios act on the servers
behind it, recording every answer and failure in a `Ledger` (when, which kind, which model
version, which replica).

It is benchmarks/client.py's load client (the same connections, framing and error kinds),
run until stopped instead of for a fixed window, on its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from benchmarks.client import Load, Tally, _Connection, _Workers, run_async
from benchmarks.ledger import Ledger, served_by, version_of

FOREVER_S = 24 * 3600.0  # the window's nominal length; `stop` closes it


class _Recording(_Workers):
    """The load client's workers, each answer also written to a ledger, ended by `stopped`."""

    def __init__(self, load: Load, ledger: Ledger) -> None:
        super().__init__(load)
        self.ledger = ledger
        self.stopped = asyncio.Event()

    async def window_closed(self) -> None:
        await self.stopped.wait()
        self.tally.window_end = time.perf_counter()

    def connect_failed(self, kind: str) -> None:
        super().connect_failed(kind)
        self.ledger.record(time.perf_counter(), kind)

    async def exchange(self, conn: _Connection, payload: bytes) -> str | None:
        error = await super().exchange(conn, payload)
        answered = error is None or error.startswith("http_")
        self.ledger.record(
            time.perf_counter(),
            error,
            version_of(conn.head, conn.body) if error is None else None,
            served_by(conn.head) if answered else None,
        )
        return error


class SteadyLoad:
    """`concurrency` closed-loop connections to host:port on a background thread, from
    `start()` until `stop()`; `ledger` holds every answer."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: Sequence[bytes],
        concurrency: int,
        timeout: float = 30.0,
        ledger: Ledger | None = None,
    ) -> None:
        self.load = Load(host, port, requests, concurrency, 0.0, FOREVER_S, timeout)
        self.ledger = ledger or Ledger()
        self._workers: _Recording | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.tally: Tally | None = None

    @property
    def inflight(self) -> int:
        """Requests sent and not answered right now."""
        return self._workers.inflight if self._workers else 0

    def start(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the load's event loop did not start")
        return self

    def _run(self) -> None:
        async def main() -> Tally:
            self._loop = asyncio.get_running_loop()
            self._workers = _Recording(self.load, self.ledger)
            self._started.set()
            return await self._workers.run()

        self.tally = run_async(main())

    def stop(self) -> None:
        """Close the window, end every worker and connection, and wait for the thread."""
        if self._loop is not None and self._workers is not None:
            self._loop.call_soon_threadsafe(self._workers.stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=self.load.timeout + 10)

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
