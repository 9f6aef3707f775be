"""The parent of several workers (`--workers N`): uvicorn's Multiprocess, SIGHUP passed on.

uvicorn's parent answers SIGHUP by replacing every worker with a new process; here it sends
SIGHUP on to each worker instead, and each reloads its models in place (service/reload.py):
no process is restarted, no connection is cut, no model loaded twice per worker.

A worker is started with SIGHUP blocked (the parent blocks it while starting one, and a new
process inherits the mask), and its lifespan unblocks it once it can reload: one sent while the
worker is still loading waits for it, instead of killing it (SIGHUP's default action).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator

from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")
HANGUP = {signal.SIGHUP}


@contextlib.contextmanager
def sighup_held() -> Iterator[None]:
    """SIGHUP blocked in this thread meanwhile (and in the processes it starts meanwhile),
    delivered after (unless it was blocked already)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANGUP)
    try:
        yield
    finally:
        if signal.SIGHUP not in previous:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANGUP)


class ReloadingMultiprocess(Multiprocess):
    """Multiprocess whose SIGHUP reloads every worker's models in place."""

    def handle_hup(self) -> None:
        logger.info("Received SIGHUP, asking every worker to reload its models.")
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # it just exited
                    os.kill(process.pid, signal.SIGHUP)

    # Everything that starts a worker does it with SIGHUP held (see the module docstring).

    def init_processes(self) -> None:
        with sighup_held():
            super().init_processes()

    def keep_subprocess_alive(self) -> None:
        with sighup_held():
            super().keep_subprocess_alive()

    def restart_all(self) -> None:
        with sighup_held():
            super().restart_all()

    def handle_ttin(self) -> None:
        with sighup_held():
            super().handle_ttin()
