"""Scheduling: length grouping, batched == single, overload, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.batcher import (
    Closed,
    DirectRunner,
    MicroBatcher,
    Overloaded,
    QueueTimeout,
    Scheduler,
    plan,
)
from service.bundle import load_bundle
from service.engine import Engine, Probs

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
        self.alone: list[bool] = []
        self.waits: list[float] = []
        self.depths: list[int] = []

    def queue_depth(self, texts: int) -> None:
        self.depths.append(texts)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self, rows: int, tokens: int, seconds: float, alone: bool = False) -> None:
        self.batches.append((rows, tokens))
        self.alone.append(alone)


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


def make(kind: str, infer: Any, **kw: Any) -> tuple[Scheduler, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(kw.pop("pool", 1))
    common: dict[str, Any] = {
        "max_batch": 4,
        "max_tokens": 1000,
        "queue_size": 64,
        "timeout_s": 10.0,
        "observer": kw.pop("observer", Recorder()),
    }
    common.update(kw)
    if kind == "batched":
        slots = common.pop("slots", 1)
        wait = common.pop("max_wait_s", 0.002)
        return MicroBatcher(infer, executor, slots=slots, max_wait_s=wait, **common), executor
    return DirectRunner(infer, executor, **common), executor


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


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_concurrent_results_equal_single_runs(engine: Engine, kind: str) -> None:
    rows = [enc.ids for enc in engine.encode(TWEETS * 6)]
    single = np.concatenate([engine.infer([row]) for row in rows])
    recorder = Recorder()

    async def go() -> list[Probs]:
        scheduler, executor = make(kind, engine.infer, max_batch=8, observer=recorder)
        scheduler.start()
        results = await asyncio.gather(*(scheduler.predict([row]) for row in rows))
        many = await scheduler.predict(rows[:13])  # one request, several batches
        await scheduler.aclose()
        executor.shutdown()
        return [*results, many]

    *results, many = run(go)
    assert np.abs(np.concatenate(results) - single).max() <= 1e-4
    assert np.abs(many - single[:13]).max() <= 1e-4
    if kind == "batched":
        assert max(rows_ for rows_, _ in recorder.batches) > 1, "no batch formed"
    assert all(rows_ <= 8 for rows_, _ in recorder.batches)


# ----------------------------------------------------------------------------- behaviours


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_results_are_routed_to_their_request_in_order(kind: str) -> None:
    infer = GatedInfer()
    requests = [[[i] * (1 + i % 5), [100 + i]] for i in range(20)]

    async def go() -> list[Probs]:
        scheduler, executor = make(kind, infer, max_batch=3)
        scheduler.start()
        out = await asyncio.gather(*(scheduler.predict(rows) for rows in requests))
        await scheduler.aclose()
        executor.shutdown()
        return list(out)

    for rows, probs in zip(requests, run(go), strict=True):
        assert probs.tolist() == [[sum(r), len(r)] for r in rows]


def test_batches_form_under_load_and_respect_budgets() -> None:
    infer = GatedInfer()
    infer.gate.clear()
    recorder = Recorder()

    async def go() -> None:
        scheduler, executor = make("batched", infer, max_batch=4, max_tokens=12, observer=recorder)
        scheduler.start()
        first = asyncio.ensure_future(scheduler.predict([[1, 2]]))
        await asyncio.to_thread(infer.entered.wait, 5)  # the worker is busy with `first`
        rest = [asyncio.ensure_future(scheduler.predict([[7] * (1 + i % 4)])) for i in range(16)]
        await asyncio.sleep(0.05)
        infer.gate.set()
        await asyncio.gather(first, *rest)
        await scheduler.aclose()
        executor.shutdown()

    run(go)
    assert recorder.batches[0] == (1, 2)  # idle: ran alone, at once
    later = recorder.batches[1:]
    assert sum(rows for rows, _ in later) == 16
    assert max(rows for rows, _ in later) == 4  # the backlog was batched...
    assert all(rows <= 4 and (rows == 1 or tokens <= 12) for rows, tokens in later)  # ...in budget
    assert len(recorder.waits) == 17


def test_an_idle_batcher_does_not_wait_for_max_wait() -> None:
    infer = GatedInfer()

    async def go() -> None:
        scheduler, executor = make("batched", infer, max_wait_s=60.0)
        scheduler.start()
        await asyncio.wait_for(scheduler.predict([[1]]), timeout=5)  # not 60 s
        await scheduler.aclose()
        executor.shutdown()

    run(go)


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_full_queue_rejects_at_once(kind: str) -> None:
    infer = GatedInfer()
    infer.gate.clear()

    async def go() -> None:
        scheduler, executor = make(kind, infer, queue_size=3)
        scheduler.start()
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


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_requests_that_wait_too_long_time_out_and_never_run(kind: str) -> None:
    infer = GatedInfer()
    infer.gate.clear()

    async def go() -> None:
        scheduler, executor = make(kind, infer, timeout_s=0.2, max_batch=1)
        scheduler.start()
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
        scheduler, executor = make("direct", infer, timeout_s=0.1)
        with pytest.raises(QueueTimeout):
            # two timeouts are 0.2 s; 1 s is the bound that a hang or a missed timer breaks
            await asyncio.wait_for(scheduler.predict([[1]]), timeout=1.0)
        infer.gate.set()
        executor.shutdown()

    run(go)


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_close_finishes_admitted_work_then_refuses(kind: str) -> None:
    infer = GatedInfer()
    infer.gate.clear()

    async def go() -> None:
        scheduler, executor = make(kind, infer, max_batch=2)
        scheduler.start()
        admitted = [asyncio.ensure_future(scheduler.predict([[i]])) for i in range(5)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(scheduler.aclose())
        await asyncio.sleep(0.01)
        assert not closing.done()
        with pytest.raises(Closed):
            await scheduler.predict([[7]])
        infer.gate.set()
        await closing
        assert [p.tolist() for p in await asyncio.gather(*admitted)] == [[[i, 1]] for i in range(5)]
        executor.shutdown()

    run(go)


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_inference_errors_reach_the_caller(kind: str) -> None:
    def broken(rows: Sequence[Sequence[int]]) -> Probs:
        raise RuntimeError("boom")

    async def go() -> None:
        scheduler, executor = make(kind, broken)
        scheduler.start()
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


@pytest.mark.parametrize("kind", ["batched", "direct"])
def test_a_lone_request_takes_the_idle_path_and_a_backlog_the_loaded_one(kind: str) -> None:
    gate = threading.Event()
    paths: list[str] = []
    loaded, alone = PathInfer("loaded", paths, gate), PathInfer("alone", paths, gate)
    recorder = Recorder()

    async def go() -> None:
        scheduler, executor = make(
            kind, loaded, infer_alone=alone, observer=recorder, pool=2, max_batch=1,
            **({"slots": 2} if kind == "batched" else {}),
        )  # fmt: skip
        scheduler.start()
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
    assert sorted(recorder.alone) == sorted(p == "alone" for p in paths)


def test_without_an_idle_session_every_run_takes_infer() -> None:
    infer = GatedInfer()
    recorder = Recorder()

    async def go() -> None:
        scheduler, executor = make("direct", infer, observer=recorder)
        await scheduler.predict([[1]])
        await scheduler.aclose()
        executor.shutdown()

    run(go)
    assert infer.calls == [[[1]]] and recorder.alone == [False]


def test_one_round_of_several_batches_runs_on_every_free_session_at_once() -> None:
    """Texts of very different lengths taken in one round make several batches: they go to
    both slots side by side, not one after the other on one."""
    running, peak, lock = [0], [0], threading.Lock()
    both = threading.Barrier(2, timeout=5)

    def infer(rows: Sequence[Sequence[int]]) -> Probs:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        with contextlib.suppress(threading.BrokenBarrierError):
            both.wait()  # returns at once when two runs overlap; times out if they never do
        with lock:
            running[0] -= 1
        return np.array([[sum(r), len(r)] for r in rows], dtype=np.float32)

    async def go() -> list[Probs]:
        scheduler, executor = make("batched", infer, pool=2, slots=2, max_batch=4)
        scheduler.start()
        # one request, two lengths far apart (> 10 % padding): two batches in one round
        out = [await scheduler.predict([[1], [1], [2] * 40, [2] * 40])]
        await scheduler.aclose()
        executor.shutdown()
        return out

    (probs,) = run(go)
    assert probs[:, 1].tolist() == [1, 1, 40, 40]
    assert peak[0] == 2


def test_few_waiting_texts_run_one_per_run_and_a_backlog_is_batched() -> None:
    """Up to max_batch texts waiting: one per run, so every session stays busy (a batch would
    idle the others until its clients send again); more: length-sorted batches."""
    infer = GatedInfer()

    async def go() -> list[int]:
        scheduler, executor = make("batched", infer, pool=2, slots=2, max_batch=4)
        scheduler.start()
        await scheduler.predict([[1], [2], [3]])  # 3 <= 4: three runs of one
        sizes = [len(call) for call in infer.calls]
        infer.calls.clear()
        await scheduler.predict([[1]] * 12)  # 12 > 4: batches
        sizes += [len(call) for call in infer.calls]
        await scheduler.aclose()
        executor.shutdown()
        return sizes

    sizes = run(go)
    assert sizes[:3] == [1, 1, 1]
    assert sum(sizes[3:]) == 12 and max(sizes[3:]) == 4
