"""Scheduling inference: admission, the bounded queue, timeouts and the two execution modes.

Both modes share one contract: `await scheduler.predict(rows)` returns one probability row
per token-id row, or raises `Overloaded` (the queue is full, at once) / `QueueTimeout` (the
request was not started within its timeout). Inference always runs in the executor, never
on the event loop.

- `DirectRunner`: each request is one executor job (its texts batched by length).
- `MicroBatcher`: a loop task gathers queued texts whenever an executor slot is free, sorts
  them by length, cuts them into batches under a row and token budget and runs them back to
  back, delivering each batch's results as soon as it finishes. Idle, a request runs at once;
  under load, texts queue while the executor is busy, so batches form without a fixed wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from time import perf_counter
from typing import Any, Protocol

import numpy as np

from service.engine import Probs

Infer = Callable[[Sequence[Sequence[int]]], Probs]
ROUND_BATCHES = 4  # a micro-batch round takes at most this many batches' worth of texts
# Inference cost is close to linear in padded tokens on CPU (measured: batching saves at most
# ~10-15% per token), so a batch is only worth it while padding wastes less than this.
MAX_PAD_WASTE = 0.10


class Overloaded(Exception):
    """The queue has no room for the request."""


class QueueTimeout(Exception):
    """The request was not started (or not finished) within its timeout."""


class Closed(Exception):
    """The scheduler is shutting down and takes no new work."""


class Observer(Protocol):
    """Where the scheduler reports what it does (metrics); called from any thread."""

    def queue_depth(self, texts: int) -> None: ...
    def queue_wait(self, seconds: float) -> None: ...
    def batch(self, rows: int, tokens: int, seconds: float, alone: bool = False) -> None: ...


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

    __slots__ = ("cancelled", "enqueued", "future", "out", "remaining", "rows", "started", "timer")

    def __init__(self, rows: Sequence[Sequence[int]], future: asyncio.Future[Probs]) -> None:
        self.rows = rows
        self.future = future
        self.enqueued = perf_counter()
        self.started = False
        self.cancelled = False
        self.remaining = len(rows)
        self.out: Probs | None = None
        self.timer: asyncio.TimerHandle | None = None


class Scheduler:
    """Admission control and timeouts shared by both modes."""

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
    ) -> None:
        self._infer = infer
        # For a run with nothing else running or waiting: the engine's idle session (both
        # cores for one request); under load every run takes `infer` (one core each).
        self._infer_alone = infer_alone
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

    @property
    def depth(self) -> int:
        """Texts admitted and not yet answered."""
        return self._admitted

    def has_room(self, texts: int) -> bool:
        """Cheap pre-check so an overloaded service rejects before doing any work."""
        return self._admitted + texts <= self._queue_size

    def start(self) -> None:
        """Begin scheduling (must be called on the running loop)."""

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
        job.timer = loop.call_later(self._timeout, self._expire, job, loop)
        try:
            self._submit(job, loop)
            return await job.future
        finally:
            job.timer.cancel()
            job.cancelled = True  # no-op once done; skips leftover rows if we were cancelled
            self._admitted -= count
            self._observer.queue_depth(self._admitted)
            if self._admitted == 0:
                self._idle.set()

    async def aclose(self) -> None:
        """Refuse new work, finish everything admitted, then return."""
        self._closed = True
        await self._idle.wait()

    def _submit(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        raise NotImplementedError

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

    def _run_rows(self, rows: Sequence[Sequence[int]]) -> Probs:
        """Inference for rows, as batches of similar length (worker thread)."""
        out: Probs | None = None
        for group in plan([len(row) for row in rows], self._max_batch, self._max_tokens):
            probs = self._timed_infer([rows[i] for i in group])
            if out is None:
                out = np.empty((len(rows), probs.shape[1]), dtype=np.float32)
            out[group] = probs
        assert out is not None
        return out

    def _timed_infer(self, rows: Sequence[Sequence[int]]) -> Probs:
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
        self._observer.batch(len(rows), len(rows) * width, perf_counter() - start, alone)
        return probs


class DirectRunner(Scheduler):
    """Each request's texts go to the executor as one job."""

    def _submit(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self._executor.submit(self._execute, job, loop)

    def _execute(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        if not self._claim(job):
            return
        try:
            probs = self._run_rows(job.rows)
        except Exception as exc:  # the request's 500 handler logs it, once
            loop.call_soon_threadsafe(self._fail, job, exc)
            return
        loop.call_soon_threadsafe(self._finish, job, probs)

    @staticmethod
    def _finish(job: _Job, probs: Probs) -> None:
        if not job.future.done():
            job.future.set_result(probs)


class MicroBatcher(Scheduler):
    """Gathers queued texts from many requests into length-sorted batches."""

    def __init__(
        self, infer: Infer, executor: Executor, *, slots: int, max_wait_s: float, **kw: Any
    ):
        super().__init__(infer, executor, **kw)
        self._pending: deque[tuple[_Job, int]] = deque()
        # A round's batches, planned and claimed, each waiting for a free slot: a round of
        # several batches runs on every free session at once, not one after the other.
        self._ready: deque[list[tuple[_Job, int]]] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(slots)
        self._n_slots = slots
        self._max_wait = max_wait_s
        self._round_rows = self._max_batch * ROUND_BATCHES
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    def problem(self) -> str | None:
        task = self._task
        if task is not None and task.done() and not self._closed:
            why = "cancelled" if task.cancelled() else repr(task.exception())
            return f"the micro-batcher stopped: {why}"
        return super().problem()

    async def aclose(self) -> None:
        await super().aclose()
        self._wakeup.set()
        if self._task is None or self._task.done():  # never started, or died (problem())
            return
        await self._task
        # Every admitted request has its answer (or its timeout) by now; rounds still running
        # only finish delivering. One stuck past the timeout is the watchdog's business: do not
        # let it hold the shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain_slots(), self._timeout)

    async def _drain_slots(self) -> None:
        for _ in range(self._n_slots):
            await self._slots.acquire()

    def _submit(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self._pending.extend((job, index) for index in range(len(job.rows)))
        self._wakeup.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            while not self._ready and not self._pending:
                if self._closed:
                    self._slots.release()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if not self._ready:
                await self._gather()
                self._ready.extend(self._take_round())
            if self._ready:
                self._executor.submit(self._execute, self._ready.popleft(), loop)
            else:
                self._slots.release()

    async def _gather(self) -> None:
        """Yield to the loop while requests keep arriving, up to max_wait: an idle service
        runs at once (nothing new after one yield), a busy one gets fuller batches."""
        deadline = perf_counter() + self._max_wait
        while len(self._pending) < self._round_rows and perf_counter() < deadline:
            before = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == before:
                return

    def _take_round(self) -> list[list[tuple[_Job, int]]]:
        taken: list[tuple[_Job, int]] = []
        while self._pending and len(taken) < self._round_rows:
            job, index = self._pending.popleft()
            if self._claim(job):
                taken.append((job, index))
        if not taken:
            return []
        lengths = [len(job.rows[index]) for job, index in taken]
        # No more waiting than one batch holds: one text per run keeps every session busy
        # (batched, the others idle until those clients send again: 8 users, 270 vs 347 RPS).
        rows = self._max_batch if len(taken) > self._max_batch else 1
        return [[taken[k] for k in group] for group in plan(lengths, rows, self._max_tokens)]

    def _execute(self, group: list[tuple[_Job, int]], loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: run one batch, deliver it, free the slot."""
        try:
            probs = self._timed_infer([job.rows[index] for job, index in group])
        except Exception as exc:  # each request's 500 handler logs it, once
            loop.call_soon_threadsafe(self._deliver, group, None, exc)
        else:
            loop.call_soon_threadsafe(self._deliver, group, probs, None)
        finally:
            loop.call_soon_threadsafe(self._slots.release)

    @staticmethod
    def _deliver(
        group: list[tuple[_Job, int]], probs: Probs | None, exc: BaseException | None
    ) -> None:
        for row, (job, index) in enumerate(group):
            if job.future.done():
                continue
            if probs is None:
                job.future.set_exception(exc or RuntimeError("inference failed"))
                continue
            if job.out is None:
                job.out = np.empty((len(job.rows), probs.shape[1]), dtype=np.float32)
            job.out[index] = probs[row]
            job.remaining -= 1
            if job.remaining == 0:
                job.future.set_result(job.out)
