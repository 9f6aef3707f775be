"""The process around the app: start-up, drain on SIGTERM/SIGINT, reload on SIGHUP, the
watchdog and the exit.

The lifespan builds the model registry on its own inference thread pool, installs the drain
and reload handlers and only then reports ready; the watchdog turns a stuck inference into 503s
and a shutdown; the shutdown waits for the inference threads a bounded time and, after an
internal failure or a stuck thread, ends the process with a failure status (a supervisor
restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from service.bundle import BundleError
from service.refusal import STATE_KEY, Refusal
from service.registry import build_registry
from service.reload import Reloader
from service.scheduler import InferencePool
from service.settings import Settings, available_cpus

if TYPE_CHECKING:  # app.py imports this module for its lifespan
    from service.app import ServiceState

log = logging.getLogger("service")

WATCHDOG_S = 0.5  # how often the lifespan checks that every scheduler can still answer
EXIT_FAILED = 70  # EX_SOFTWARE: an internal failure ended the process (a supervisor restarts it)
# After the drain every admitted request has answered (or timed out), so the inference threads
# are idle: only a stuck one is still running, and shutdown waits for it this long at most.
EXECUTOR_GRACE_S = 2.0


class Supervisor:
    """What the service does when it cannot go on: ask its own server to shut down (the usual
    graceful path: stop accepting, finish what was accepted) and, once shut down, end the
    process with a failure status. Tests substitute a recorder."""

    def stop(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def exit(self, status: int) -> None:
        logging.shutdown()  # the queued log lines reach stderr first
        os._exit(status)  # a stuck inference thread would block a normal exit forever


def _install_drain(state: ServiceState) -> dict[int, Any]:
    """On the first SIGTERM/SIGINT, turn /ready to 503, wait `drain_delay_s`, then let the
    server's own handler run (uvicorn: stop accepting, finish accepted requests, exit).
    Only in the main thread, and only over a Python-level handler (uvicorn's)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    loop = asyncio.get_running_loop()
    delay = state.settings.drain_delay_s
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        chained = signal.getsignal(sig)
        if not callable(chained):
            continue

        def handler(
            signum: int, frame: FrameType | None, chained: Callable[..., Any] = chained
        ) -> None:
            # A signal handler runs between two bytecodes of whatever the main thread was
            # doing: no logging here (its locks may be held), only flags and the loop.
            first = not state.draining
            state.draining = True
            if first:
                loop.call_soon_threadsafe(
                    lambda: log.info("draining", extra={"signal": signum, "delay_s": delay})
                )
            if first and delay > 0:
                loop.call_soon_threadsafe(loop.call_later, delay, chained, signum, frame)
            else:
                chained(signum, frame)

        previous[sig] = chained
        signal.signal(sig, handler)
    return previous


@contextlib.asynccontextmanager
async def lifespan(state: ServiceState, app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """Load, warm and schedule every model before reporting ready; on the way out, refuse new
    work, close the schedulers, wait for the inference threads (bounded) and exit with a failure
    status when the service failed or a thread is stuck. The ASGI state it yields hands the
    protocol its overload refusal (service/refusal.py)."""
    settings = state.settings
    state.draining = False  # an app may be started again after a shutdown (tests do)
    executor = InferencePool(settings.pool_size, settings.overload_spare)
    try:  # held by the state alone: a reload replaces it, and the old models must be freed
        state.load(await build_registry(settings, state.verified, executor, state.metrics))
    except BaseException as exc:
        executor.shutdown(wait=False)
        if isinstance(exc, BundleError):
            log.critical("refusing to start: %s", exc)
        raise
    _warn_if_oversubscribed(settings)
    _lower_loop_priority(executor, settings)
    previous = _install_drain(state)
    reloader = state.reloader = Reloader(state, executor)
    hangup = _install_reload(reloader)
    state.ready = True  # only now: every model verified, loaded, warm and scheduling
    _log_ready(settings, state)
    watchdog = asyncio.get_running_loop().create_task(_watch(state, reloader), name="watchdog")
    try:
        yield {STATE_KEY: Refusal(state)}
    finally:
        state.ready = False
        state.draining = True
        watchdog.cancel()
        _remove_reload(hangup)
        await reloader.aclose()  # no swap after this: the registry closed next is the last
        assert state.registry is not None
        await state.registry.aclose()
        stuck = not await _shutdown(executor, EXECUTOR_GRACE_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        state.metrics.process_exited()
        if stuck:
            log.critical("an inference thread did not finish: exiting without it")
        log.info("stopped")
        if state.failed or stuck:
            state.supervisor.exit(EXIT_FAILED)


def _lower_loop_priority(executor: InferencePool, settings: Settings) -> None:
    """Give the event loop thread a lower priority than the inference threads (nice + N).

    With every core running a session.run, the loop's thread is one more runnable thread, and
    Linux shares the cores by weight: at equal priority, clients that retry refused requests
    at once keep the loop busy and take a third of the CPU from the answers. At +5 the loop
    weighs a third of an inference thread, so overload costs the answers less, while an idle
    core still runs it at once (`make reliability`; README, *Reliability*). The pool's threads
    are started first, because a thread takes the priority of the thread that starts it.
    """
    if settings.loop_nice == 0:
        return
    executor.start_threads(10.0)
    inference = executor.submit(os.getpriority, os.PRIO_PROCESS, 0).result()  # 0: this thread
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, inference + settings.loop_nice))
    except OSError as exc:  # not permitted here (a seccomp profile): run at equal priority
        log.warning("could not lower the event loop's priority: %s", exc)


class HangupLatch:
    """SIGHUP's handler until the lifespan can reload (`python -m service` installs it first
    thing): it remembers that one came, where SIGHUP's default action would end the process."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True


def _install_reload(reloader: Reloader) -> tuple[Any, bool] | None:
    """SIGHUP reloads the models (with several workers the parent passes it on to each). One
    that came during start-up reloads now: caught by a HangupLatch, or held blocked (a worker
    starts with it blocked: service/workers.py). Main thread only. Returns what
    `_remove_reload` restores: the previous handler, and whether SIGHUP was blocked."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGHUP)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.on_signal)
    blocked = signal.SIGHUP in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    if isinstance(handler, HangupLatch) and handler.asked:
        reloader.on_signal()
    return handler, blocked


def _remove_reload(installed: tuple[Any, bool] | None) -> None:
    """At shutdown: SIGHUP as it was before the lifespan (a late one reloads nothing)."""
    if installed is None:
        return
    handler, blocked = installed
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    if handler is not None:
        signal.signal(signal.SIGHUP, handler)


async def _watch(state: ServiceState, reloader: Reloader) -> None:
    """Turn an internal failure (a stuck inference) into /ready and /health 503 and a shutdown
    with a failure status, instead of a process that is up but answers nothing (or at half
    capacity) until someone notices. Replaced models still answering are watched too."""
    while state.failed is None:
        await asyncio.sleep(WATCHDOG_S)
        assert state.registry is not None
        for model in (*state.registry.loaded, *reloader.retiring):
            problem = model.scheduler.problem()
            if problem is not None:
                state.failed = f"model {model.name}: {problem}"
                log.critical(
                    "internal failure, shutting down for a restart: %s",
                    state.failed,
                    extra={"exit_status": EXIT_FAILED},
                )
                state.supervisor.stop()
                return


async def _shutdown(executor: ThreadPoolExecutor, timeout_s: float) -> bool:
    """Wait for the inference threads at most `timeout_s`; False if one is still running.
    (A daemon thread waits, not the loop's executor: the loop's own shutdown would wait for
    it in turn.)"""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wait() -> None:
        executor.shutdown(wait=True)
        with contextlib.suppress(RuntimeError):  # the loop may be gone by then
            loop.call_soon_threadsafe(done.set)

    threading.Thread(target=wait, name="sentiment-shutdown", daemon=True).start()
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    except TimeoutError:
        return False
    return True


def _warn_if_oversubscribed(settings: Settings) -> None:
    busy = settings.workers * settings.pool_size * settings.threads
    if busy > available_cpus():
        log.warning(
            "workers x pool_size x threads = %d compute threads on %d cores: oversubscribed",
            busy,
            available_cpus(),
        )


def _log_ready(settings: Settings, state: ServiceState) -> None:
    registry = state.registry
    assert registry is not None
    models = [
        {"model": m.name, "bundle_sha256": m.sha256, "max_batch": m.max_batch,
         "batch_drift": m.batch_drift, "layout": m.layout}
        for m in registry
    ]  # fmt: skip
    log.info(
        "ready",
        extra={"model": registry.default.name, "models": models, "settings": settings.public()},
    )
