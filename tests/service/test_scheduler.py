"""Scheduling: length grouping, a request's batches == single runs, overload, timeouts,
shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.bundle import load_bundle
from service.engine import Engine, Probs
from service.scheduler import (
    Closed,
    InferencePool,
    Overloaded,
    QueueTimeout,
    Scheduler,
    plan,
)

T = TypeVar("T")
pytestmark = pytest.mark.timeout(30)

TWEETS = [
    "I love this game!",
    "awful update today, servers broken again",
    "the movie",
    "great " * 30,
    "sad",
    "this is the best day",
    "i hate it",
    "a",
    "happy happy happy great update",
    "worst game of the year? bad bad",
]


class Recorder:
    """Observer that keeps what the scheduler reports."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.paths: list[str] = []
        self.waits: list[float] = []
        self.depths: list[int] = []

    def queue_depth(self, texts: int) -> None:
        self.depths.append(texts)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self, rows: int, tokens: int, seconds: float, path: str = "loaded") -> None:
        self.batches.append((rows, tokens))
        self.paths.append(path)


class GatedInfer:
    """A fake model: row -> [sum(ids), len]; blocks while the gate is closed."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[list[int]]] = []
        self.entered = threading.Event()

    def __call__(self, rows: Sequence[Sequence[int]]) -> Probs:
        self.calls.append([list(r) for r in rows])
        self.entered.set()
        self.gate.wait()
        return np.array([[sum(r), len(r)] for r in rows], dtype=np.float32)


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def make(infer: Any, **kw: Any) -> tuple[Scheduler, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(kw.pop("pool", 1))
    common: dict[str, Any] = {
        "max_batch": 4,
        "max_tokens": 1000,
        "queue_size": 64,
        "timeout_s": 10.0,
        "observer": kw.pop("observer", Recorder()),
    }
    common.update(kw)
    return Scheduler(infer, executor, **common), executor


# ------------------------------------------------------------------------------------ plan


@given(
    st.lists(st.integers(1, 64), max_size=80),
    st.integers(1, 16),
    st.integers(1, 600),
)
def test_plan_covers_every_row_once_within_budget(
    lengths: list[int], max_batch: int, max_tokens: int
) -> None:
    groups = plan(lengths, max_batch, max_tokens)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        widths = [lengths[i] for i in group]
        assert len(group) <= max_batch
        assert len(group) == 1 or len(group) * max(widths) <= max_tokens
        assert len(group) == 1 or len(group) * max(widths) <= 1.1 * sum(widths) + 1e-9
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(flat)  # grouped by length: no batch pads a short row to a long one


def test_plan_groups_similar_lengths() -> None:
    lengths = [20, 50, 21, 49, 20, 51, 90]
    assert [sorted(lengths[i] for i in g) for g in plan(lengths, 3, 1000)] == [
        [20, 20, 21],
        [49, 50, 51],
        [90],
    ]
    assert len(plan([10, 30], 8, 1000)) == 2  # padding 10 to 30 would waste a third


# ------------------------------------------------------------------ batched == single (real)


@pytest.fixture(scope="module")
def engine(tiny_bundle: Path) -> Engine:
    return Engine(load_bundle(tiny_bundle), threads=1)


def test_concurrent_results_equal_single_runs(engine: Engine) -> None:
    rows = [enc.ids for enc in engine.encode(TWEETS * 6)]
    single = np.concatenate([engine.infer([row]) for row in rows])
    recorder = Recorder()

    async def go() -> list[Probs]:
        scheduler, executor = make(engine.infer, max_batch=8, observer=recorder)
        results = await asyncio.gather(*(scheduler.predict([row]) for row in rows))
        many = await scheduler.predict(rows[:13])  # one request, several batches
        await scheduler.aclose()
        executor.shutdown()
        return [*results, many]

    *results, many = run(go)
    assert np.abs(np.concatenate(results) - single).max() <= 1e-4
    assert np.abs(many - single[:13]).max() <= 1e-4
    assert max(rows_ for rows_, _ in recorder.batches) > 1, "the 13-text request was not batched"
    assert all(rows_ <= 8 for rows_, _ in recorder.batches)


# ----------------------------------------------------------------------------- behaviours


def test_results_are_routed_to_their_request_in_order() -> None:
    infer = GatedInfer()
    requests = [[[i] * (1 + i % 5), [100 + i]] for i in range(20)]

    async def go() -> list[Probs]:
        scheduler, executor = make(infer, max_batch=3)
        out = await asyncio.gather(*(scheduler.predict(rows) for rows in requests))
        await scheduler.aclose()
        executor.shutdown()
        return list(out)

    for rows, probs in zip(requests, run(go), strict=True):
        assert probs.tolist() == [[sum(r), len(r)] for r in rows]


def test_full_queue_rejects_at_once() -> None:
    infer = GatedInfer()
    infer.gate.clear()

    async def go() -> None:
        scheduler, executor = make(infer, queue_size=3)
        admitted = [asyncio.ensure_future(scheduler.predict([[i]])) for i in range(2)]
        await asyncio.sleep(0.01)
        assert scheduler.depth == 2 and scheduler.has_room(1) and not scheduler.has_room(2)
        with pytest.raises(Overloaded):
            await scheduler.predict([[5], [6]])
        infer.gate.set()
        await asyncio.gather(*admitted)
        assert scheduler.depth == 0
        await scheduler.predict([[1], [2], [3]])  # room again
        await scheduler.aclose()
        executor.shutdown()

    run(go)


class CountingInfer(GatedInfer):
    """GatedInfer that also counts the runs inside it at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most = 0
        self.threads: list[str] = []  # the thread of each run, in order
        self._lock = threading.Lock()

    def __call__(self, rows: Sequence[Sequence[int]]) -> Probs:
        with self._lock:
            self.threads.append(threading.current_thread().name)
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            return super().__call__(rows)
        finally:
            with self._lock:
                self.inside -= 1


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


@pytest.mark.parametrize("spare", [0, 1])
def test_a_spare_run_starts_only_once_the_queue_is_full(spare: int) -> None:
    infer, recorder = CountingInfer(), Recorder()
    infer.gate.clear()

    async def go() -> None:
        pool = InferencePool(1, spare)
        common = {"max_batch": 4, "max_tokens": 1000, "timeout_s": 10.0, "observer": recorder}
        scheduler = Scheduler(infer, pool, queue_size=3, **common)
        first = asyncio.ensure_future(scheduler.predict([[1]]))
        await _until(lambda: infer.inside == 1)
        second = asyncio.ensure_future(scheduler.predict([[2]]))
        await asyncio.sleep(0.1)
        assert infer.inside == 1  # room left in the queue: one run per core, the spare waits
        third = asyncio.ensure_future(scheduler.predict([[3]]))  # the queue is now full
        if spare:
            await _until(lambda: infer.inside == 2)
        else:
            await asyncio.sleep(0.1)
            assert infer.inside == 1
        infer.gate.set()
        results = await asyncio.gather(first, second, third)
        assert [r[0][0] for r in results] == [1, 2, 3]
        assert infer.most == 1 + spare
        await scheduler.aclose()
        pool.shutdown()

    run(go)
    spares = [name.startswith("sentiment-spare") for name in infer.threads]
    # the spare took the oldest waiting job; the third went to whichever thread was free first
    # while the queue still counted as full (answers leave it on the loop's next turn)
    assert spares[:2] == [False, bool(spare)] and (spare or not any(spares))
    # /metrics counts the spare's runs apart from the loaded ones
    assert sorted(recorder.paths) == sorted("spare" if s else "loaded" for s in spares)


def test_spare_threads_stay_out_of_a_queue_with_room() -> None:
    infer, recorder = CountingInfer(), Recorder()

    async def go() -> None:
        pool = InferencePool(1, 1)
        common = {"max_batch": 4, "max_tokens": 1000, "timeout_s": 10.0, "observer": recorder}
        scheduler = Scheduler(infer, pool, queue_size=64, **common)
        for _ in range(5):  # bursts of 20 against 64 places: waiting, never full
            await asyncio.gather(*(scheduler.predict([[i]]) for i in range(20)))
        await scheduler.aclose()
        pool.shutdown()

    run(go)
    assert len(infer.threads) == 100 and infer.most == 1
    assert not any(name.startswith("sentiment-spare") for name in infer.threads)
    assert set(recorder.paths) == {"loaded"}


def test_requests_that_wait_too_long_time_out_and_never_run() -> None:
    infer = GatedInfer()
    infer.gate.clear()

    async def go() -> None:
        scheduler, executor = make(infer, timeout_s=0.2, max_batch=1)
        running = asyncio.ensure_future(scheduler.predict([[1]]))
        await asyncio.to_thread(infer.entered.wait, 5)
        with pytest.raises(QueueTimeout):
            await scheduler.predict([[99]])  # queued behind the blocked one
        assert scheduler.depth == 1
        infer.gate.set()
        assert (await running).tolist() == [[1, 1]]  # started in time: it is answered
        await scheduler.aclose()
        executor.shutdown()

    run(go)
    assert [[99]] not in infer.calls


def test_a_wedged_inference_still_answers_within_two_timeouts() -> None:
    infer = GatedInfer()
    infer.gate.clear()

    async def go() -> None:
        scheduler, executor = make(infer, timeout_s=0.1)
        with pytest.raises(QueueTimeout):
            # two timeouts are 0.2 s; 1 s is the bound that a hang or a missed timer breaks
            await asyncio.wait_for(scheduler.predict([[1]]), timeout=1.0)
        infer.gate.set()
        executor.shutdown()

    run(go)


def test_close_finishes_admitted_work_then_refuses() -> None:
    infer = GatedInfer()
    permits = threading.Semaphore(0)

    def one_at_a_time(rows: Sequence[Sequence[int]]) -> Probs:
        assert permits.acquire(timeout=10)
        return infer(rows)

    async def go() -> list[str]:
        scheduler, executor = make(one_at_a_time, max_batch=2)
        events: list[str] = []
        admitted = [asyncio.ensure_future(scheduler.predict([[i]])) for i in range(5)]
        for i, request in enumerate(admitted):
            request.add_done_callback(lambda _, i=i: events.append(f"answered {i}"))
        await asyncio.sleep(0)  # one loop turn: the five are admitted
        assert scheduler.depth == 5
        closing = asyncio.ensure_future(scheduler.aclose())
        closing.add_done_callback(lambda _: events.append("closed"))
        await asyncio.sleep(0)  # one loop turn: aclose has marked the scheduler closed
        with pytest.raises(Closed):
            await scheduler.predict([[7]])
        for request in admitted:  # one run at a time
            permits.release()
            await request
            await asyncio.sleep(0)  # a turn in which an aclose woken by this answer would end
        await closing
        assert [p.tolist() for p in await asyncio.gather(*admitted)] == [[[i, 1]] for i in range(5)]
        executor.shutdown()
        return events

    # aclose returned after the last admitted answer, not at the first
    assert run(go) == [f"answered {i}" for i in range(5)] + ["closed"]


def test_inference_errors_reach_the_caller() -> None:
    def broken(rows: Sequence[Sequence[int]]) -> Probs:
        raise RuntimeError("boom")

    async def go() -> None:
        scheduler, executor = make(broken)
        with pytest.raises(RuntimeError, match="boom"):
            await scheduler.predict([[1]])
        assert scheduler.depth == 0
        await scheduler.aclose()
        executor.shutdown()

    run(go)


# --------------------------------------------------------------- alone vs loaded (issue 12)


class PathInfer(GatedInfer):
    """GatedInfer that records which path each run took."""

    def __init__(self, path: str, paths: list[str], gate: threading.Event) -> None:
        super().__init__()
        self.path, self.paths, self.gate = path, paths, gate

    def __call__(self, rows: Sequence[Sequence[int]]) -> Probs:
        self.paths.append(self.path)
        return super().__call__(rows)


def test_a_lone_request_takes_the_idle_path_and_a_backlog_the_loaded_one() -> None:
    gate = threading.Event()
    paths: list[str] = []
    loaded, alone = PathInfer("loaded", paths, gate), PathInfer("alone", paths, gate)
    recorder = Recorder()

    async def go() -> None:
        scheduler, executor = make(  # inline_tokens=0: even a lone run goes to a thread
            loaded, infer_alone=alone, observer=recorder, pool=2, max_batch=1, inline_tokens=0,
        )  # fmt: skip
        gate.set()
        await scheduler.predict([[1, 2]])  # idle: alone
        gate.clear()
        alone.entered.clear()
        first = asyncio.ensure_future(scheduler.predict([[3]]))
        await asyncio.to_thread(alone.entered.wait, 5)
        rest = [asyncio.ensure_future(scheduler.predict([[4 + i]])) for i in range(4)]
        await asyncio.sleep(0.05)  # queued behind the running one
        gate.set()
        await asyncio.gather(first, *rest)
        await scheduler.predict([[9]])  # idle again
        await scheduler.aclose()
        executor.shutdown()

    run(go)
    assert paths[0] == "alone" and paths[-1] == "alone"
    assert paths[1] == "alone"  # it started with nothing else admitted
    # a backlog: one thread per run while anything else waits; the last of it may find the
    # other session done and nothing admitted behind it, and then runs alone
    assert paths[2:5] == ["loaded"] * 3 and paths[5] in ("loaded", "alone")
    assert len(paths) == 7
    # what the metric counts (reported as runs finish, so compare counts)
    assert sorted(recorder.paths) == sorted(paths)


class ThreadInfer:
    """Records the thread each run is on."""

    def __init__(self, path: str, runs: list[tuple[str, int]]) -> None:
        self.path, self.runs = path, runs

    def __call__(self, rows: Sequence[Sequence[int]]) -> Probs:
        self.runs.append((self.path, threading.get_ident()))
        return np.zeros((len(rows), 2), dtype=np.float32)


def test_a_lone_tweet_runs_on_the_loop_and_company_never_does() -> None:
    runs: list[tuple[str, int]] = []
    recorder = Recorder()

    async def go() -> int:
        scheduler, executor = make(
            ThreadInfer("loaded", runs), infer_alone=ThreadInfer("alone", runs),
            observer=recorder, pool=2, max_batch=1, inline_tokens=4,
        )  # fmt: skip
        await scheduler.predict([[1, 2]])  # alone, one small text: on the loop
        await scheduler.predict([[1, 2, 3, 4, 5]])  # alone but longer: a thread
        await scheduler.predict([[1], [2]])  # alone but two texts: a thread
        # arriving together: the first waits one turn, sees the others and takes a thread
        await asyncio.gather(*(scheduler.predict([[i]]) for i in range(4)))
        await scheduler.aclose()
        executor.shutdown()
        return threading.get_ident()

    loop_thread = run(go)
    on_loop = [thread == loop_thread for _, thread in runs]
    assert on_loop == [True] + [False] * (len(runs) - 1)
    assert runs[0][0] == "alone" and runs[1][0] == "alone"  # both lone: the idle session
    assert len(runs) == 1 + 1 + 2 + 4 and recorder.waits[0] == 0.0
    assert recorder.depths[-1] == 0  # everything admitted was answered


def test_without_an_idle_session_every_run_takes_infer() -> None:
    infer = GatedInfer()
    recorder = Recorder()

    async def go() -> None:
        scheduler, executor = make(infer, observer=recorder)
        await scheduler.predict([[1]])
        await scheduler.aclose()
        executor.shutdown()

    run(go)
    assert infer.calls == [[[1]]] and recorder.paths == ["loaded"]
