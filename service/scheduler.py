"""Scheduling inference: admission, the bounded queue, timeouts.

`await scheduler.predict(rows)` returns one probability row per token-id row, or raises
`Overloaded` (the queue is full, at once) / `QueueTimeout` (the request was not started within
its timeout). Each request is one executor job, its texts cut into length-sorted batches
(`plan`). One exception: a one-text request that finds nothing else admitted or running, even
after the requests read in the same loop iteration had their turn, runs on the event loop
itself (`inline_tokens`): it saves the two thread hand-offs and the loop's wake-up, which a lone
request's latency shows (measured side by side: reports/experiments.md). The loop is blocked
meanwhile, for one tweet's run (a few ms); whatever arrives then goes the executor way.

There is no cross-request micro-batcher: it was built (issue #11), measured against this in
every `make bench` since, and removed. Batching other requests' texts saved less engine time in
the service's plan on this CPU than its extra hops through the event loop cost (figures:
reports/experiments.md; README, *Measured results*).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from time import perf_counter
from typing import Protocol

import numpy as np

from service.engine import Probs

Infer = Callable[[Sequence[Sequence[int]]], Probs]
# Inference cost is close to linear in padded tokens on CPU (batching saves little per token:
# reports/experiments.md), so a batch is only worth it while padding wastes less than this.
MAX_PAD_WASTE = 0.10
# A lone request with one text of at most this many tokens may run on the event loop (one
# tweet of the shipped models, max_length 128: a run of a few ms).
INLINE_TOKENS = 128
SPARE_THREADS = "sentiment-spare"  # the overflow pool's thread names


class Overloaded(Exception):
    """The queue has no room for the request."""


class QueueTimeout(Exception):
    """The request was not started (or not finished) within its timeout."""


class Closed(Exception):
    """The scheduler is shutting down and takes no new work."""


class InferencePool(ThreadPoolExecutor):
    """The inference threads: `runs` session.run calls at once (one per core), and `spare`
    threads that run only for a scheduler that is full. A full scheduler is refusing requests;
    a retry storm then keeps the event loop busy refusing, and the loop's thread takes cores
    from the runs. A spare run on top takes them back; under ordinary load it would cost the
    loop the cores it needs, so the spare threads never see a job until a scheduler is full
    (they take the oldest waiting jobs from it, not from a gate the runs pass through: a gate
    made every run wait on one lock, and a waiting job could be overtaken until it timed out).
    Off by default (`SENTIMENT_OVERLOAD_SPARE`; reports/experiments.md)."""

    def __init__(self, runs: int, spare: int = 0) -> None:
        super().__init__(runs, thread_name_prefix="sentiment-infer")
        self.runs, self.spare = runs, spare
        self.overflow = (
            ThreadPoolExecutor(spare, thread_name_prefix=SPARE_THREADS) if spare else None
        )

    @property
    def threads(self) -> int:
        return self.runs + self.spare

    def start_threads(self, timeout_s: float) -> None:
        """Start every thread now (a thread takes the priority of the thread that starts it)."""
        for pool, count in ((self, self.runs), (self.overflow, self.spare)):
            if pool is None:
                continue
            started = threading.Barrier(count)
            for future in [pool.submit(started.wait, timeout_s) for _ in range(count)]:
                future.result()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self.overflow is not None:
            self.overflow.shutdown(wait, cancel_futures=cancel_futures)
        super().shutdown(wait, cancel_futures=cancel_futures)


class Observer(Protocol):
    """Where the scheduler reports what it does (metrics); called from any thread."""

    def queue_depth(self, texts: int) -> None: ...
    def queue_wait(self, seconds: float) -> None: ...
    def batch(self, rows: int, tokens: int, seconds: float, path: str = "loaded") -> None: ...


def plan(
    lengths: Sequence[int], max_batch: int, max_tokens: int, max_waste: float = MAX_PAD_WASTE
) -> list[list[int]]:
    """Indices grouped into batches of similar length: at most `max_batch` rows, at most
    `max_tokens` padded tokens, and padding at most `max_waste` of the batch's tokens (a
    single over-long row still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for index in order:
        width = lengths[index]  # ascending: the newest row sets the padded width
        padded = (len(current) + 1) * width
        if current and (
            len(current) >= max_batch
            or padded > max_tokens
            or padded > (1 + max_waste) * (real + width)
        ):
            groups.append(current)
            current, real = [], 0
        current.append(index)
        real += width
    if current:
        groups.append(current)
    return groups


class _Job:
    """One request: its rows, its future, and who got to it first (worker or timeout)."""

    __slots__ = ("cancelled", "enqueued", "future", "rows", "started", "timer")

    def __init__(self, rows: Sequence[Sequence[int]], future: asyncio.Future[Probs]) -> None:
        self.rows = rows
        self.future = future
        self.enqueued = perf_counter()
        self.started = False
        self.cancelled = False
        self.timer: asyncio.TimerHandle | None = None


class Scheduler:
    """Admission control, timeouts, and one executor job per request."""

    def __init__(
        self,
        infer: Infer,
        executor: Executor,
        *,
        max_batch: int,
        max_tokens: int,
        queue_size: int,
        timeout_s: float,
        observer: Observer,
        infer_alone: Infer | None = None,
        inline_tokens: int = INLINE_TOKENS,
    ) -> None:
        self._infer = infer
        # For a run with nothing else running or waiting: the engine's idle session (both
        # cores for one request); under load every run takes `infer` (one core each).
        self._infer_alone = infer_alone
        self._inline_tokens = inline_tokens if infer_alone else 0  # only with the idle session
        self._executor = executor
        self._max_batch = max_batch
        self._max_tokens = max_tokens
        self._queue_size = queue_size
        self._timeout = timeout_s
        self._observer = observer
        self._admitted = 0  # texts accepted and not yet answered
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = threading.Lock()  # started/cancelled hand-over between worker and timer
        self._running: dict[int, float] = {}  # worker thread -> start of its session.run
        # jobs in arrival order: an inference thread takes the oldest (a spare one too, when full)
        self._jobs: deque[tuple[_Job, asyncio.AbstractEventLoop]] = deque()
        self._overflow = executor.overflow if isinstance(executor, InferencePool) else None
        self._spare_asked = False  # a spare turn is submitted and has not started yet

    @property
    def depth(self) -> int:
        """Texts admitted and not yet answered."""
        return self._admitted

    def has_room(self, texts: int) -> bool:
        """Cheap pre-check so an overloaded service rejects before doing any work."""
        return self._admitted + texts <= self._queue_size

    def problem(self) -> str | None:
        """Why this scheduler can no longer answer (None while healthy): a session.run has
        been running for longer than the request timeout (no batch takes a fraction of that:
        the run is stuck, and its core is lost to every later request)."""
        now = perf_counter()
        longest = max((now - t for t in list(self._running.values())), default=0.0)
        if longest > self._timeout:
            return f"an inference has been running for {longest:.1f} s (stuck)"
        return None

    async def predict(self, rows: Sequence[Sequence[int]]) -> Probs:
        """Probabilities for `rows`, in order; raises Overloaded, QueueTimeout or Closed."""
        if self._closed:
            raise Closed
        count = len(rows)
        if self._admitted + count > self._queue_size:
            raise Overloaded
        loop = asyncio.get_running_loop()
        job = _Job(rows, loop.create_future())
        self._admitted += count
        self._idle.clear()
        self._observer.queue_depth(self._admitted)
        if self._overflow is not None and not self._spare_asked and self._full():
            self._spare_asked = True
            self._overflow.submit(self._spare_turn)
        try:
            if await self._alone_after_a_turn(rows):
                job.started = True
                self._observer.queue_wait(0.0)
                return self._run_rows(rows)
            job.timer = loop.call_later(self._timeout, self._expire, job, loop)
            self._submit(job, loop)
            return await job.future
        finally:
            if job.timer is not None:
                job.timer.cancel()
            job.cancelled = True  # no-op once done; skips leftover rows if we were cancelled
            self._admitted -= count
            self._observer.queue_depth(self._admitted)
            if self._admitted == 0:
                self._idle.set()

    async def _alone_after_a_turn(self, rows: Sequence[Sequence[int]]) -> bool:
        """Whether this (admitted) request may run on the loop: one small text, and nothing
        else admitted or running, also after one turn of the loop (requests whose bytes came
        in with this one are parsed and admitted in that turn: under load, never alone)."""
        if len(rows) != 1 or len(rows[0]) > self._inline_tokens:
            return False
        if self._admitted != 1 or self._running:
            return False
        await asyncio.sleep(0)
        return self._admitted == 1 and not self._running

    async def aclose(self) -> None:
        """Refuse new work, finish everything admitted, then return."""
        self._closed = True
        await self.drained()

    async def drained(self) -> None:
        """Wait until nothing admitted is left, still taking new work: a replaced model
        answers whoever chose it before the swap."""
        await self._idle.wait()

    def _submit(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self._jobs.append((job, loop))
        self._executor.submit(self._take)

    def _take(self, path: str = "loaded") -> bool:
        """Run the oldest waiting job (any inference thread; `path` names which, for /metrics);
        False if a spare thread took it."""
        try:
            job, loop = self._jobs.popleft()
        except IndexError:
            return False
        self._execute(job, loop, path)
        return True

    def _spare_turn(self) -> None:
        """A spare thread: take the oldest jobs while the queue stays full."""
        self._spare_asked = False
        while self._full() and self._take("spare"):
            pass

    def _full(self) -> bool:
        """Every place in the queue taken: the next request is refused (as `Registry.full`)."""
        return not self.has_room(1)

    def _execute(self, job: _Job, loop: asyncio.AbstractEventLoop, path: str) -> None:
        if not self._claim(job):
            return
        try:
            probs = self._run_rows(job.rows, path)
        except Exception as exc:  # the request's 500 handler logs it, once
            loop.call_soon_threadsafe(self._fail, job, exc)
            return
        loop.call_soon_threadsafe(self._finish, job, probs)

    @staticmethod
    def _finish(job: _Job, probs: Probs) -> None:
        if not job.future.done():
            job.future.set_result(probs)

    def _claim(self, job: _Job) -> bool:
        """Mark the job started unless its timeout fired first (any thread)."""
        with self._lock:
            if job.cancelled or job.future.done():
                return False
            if not job.started:
                job.started = True
                self._observer.queue_wait(perf_counter() - job.enqueued)
            return True

    def _expire(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """Timer: a job not started in time is dropped; a running one gets one more timeout,
        so even a wedged session cannot leave a client waiting forever."""
        with self._lock:
            started = job.started
            if not started:
                job.cancelled = True
        if job.future.done():
            return
        if not started:
            job.future.set_exception(QueueTimeout("not started within the request timeout"))
        else:
            stuck = QueueTimeout("inference did not finish in time")
            job.timer = loop.call_later(self._timeout, self._fail, job, stuck)

    @staticmethod
    def _fail(job: _Job, exc: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(exc)

    def _run_rows(self, rows: Sequence[Sequence[int]], path: str = "loaded") -> Probs:
        """Inference for rows, as batches of similar length (worker thread, or the loop)."""
        out: Probs | None = None
        for group in plan([len(row) for row in rows], self._max_batch, self._max_tokens):
            probs = self._timed_infer([rows[i] for i in group], path)
            if out is None:
                out = np.empty((len(rows), probs.shape[1]), dtype=np.float32)
            out[group] = probs
        assert out is not None
        return out

    def _timed_infer(self, rows: Sequence[Sequence[int]], path: str) -> Probs:
        start = perf_counter()
        worker = threading.get_ident()
        # Nothing else running or admitted (no one waits behind it): the idle session.
        alone = not self._running and self._admitted <= len(rows)
        infer = self._infer_alone if alone and self._infer_alone else self._infer
        alone = infer is self._infer_alone
        self._running[worker] = start
        try:
            probs = infer(rows)
        finally:
            del self._running[worker]
        width = max(len(row) for row in rows)
        path = "alone" if alone else path
        self._observer.batch(len(rows), len(rows) * width, perf_counter() - start, path)
        return probs
