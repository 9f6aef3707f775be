"""What a server's process tree spent in a window, read from the OS (no sampling): CPU time
(psutil, every thread, native ones included; the event loop's main thread on its own) and the
time its threads waited for a core (Linux schedstat): what py-spy's per-stage samples are
checked against."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PROC = Path("/proc")


def tree(pid: int) -> list[psutil.Process]:
    """`pid` and every process below it ([] once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of `processes` so far (a process that is gone counts 0)."""
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def run_queue_seconds(processes: Sequence[psutil.Process], proc: Path = PROC) -> float | None:
    """Seconds the threads of `processes` have spent runnable but waiting for a core (the
    second field of /proc/<pid>/task/<tid>/schedstat); None where the OS does not say."""
    total, seen = 0.0, False
    for process in processes:
        with contextlib.suppress(OSError):
            for task in (proc / str(process.pid) / "task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int((task / "schedstat").read_text().split()[1]) / 1e9
                    seen = True
    return total if seen else None


def main_thread_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of each process's main thread: the service's event loop (a
    worker process's too; a supervising parent's main thread idles)."""
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            for thread in proc.threads():
                if thread.id == proc.pid:
                    total += thread.user_time + thread.system_time
    return total


@dataclass
class Window:
    """CPU and run-queue seconds of a process tree between `open` and `close` (the tree as it
    was when the window opened)."""

    processes: list[psutil.Process] = field(default_factory=list)
    start: tuple[float, float | None] = (0.0, None)
    end: tuple[float, float | None] = (0.0, None)
    loop: tuple[float, float] = (0.0, 0.0)  # main threads' CPU seconds at open and at close

    def read(self) -> tuple[float, float | None]:
        return cpu_seconds(self.processes), run_queue_seconds(self.processes)

    def open(self, pid: int) -> None:
        self.processes = tree(pid)
        self.start = self.read()
        self.loop = (main_thread_seconds(self.processes), 0.0)

    def close(self) -> None:
        self.end = self.read()
        self.loop = (self.loop[0], main_thread_seconds(self.processes))

    @property
    def loop_cpu_s(self) -> float:
        """The event loop threads' CPU seconds in the window (the main threads)."""
        return max(0.0, self.loop[1] - self.loop[0])

    @property
    def cpu_s(self) -> float:
        return self.end[0] - self.start[0]

    @property
    def run_queue_s(self) -> float | None:
        """None where schedstat is missing; never negative (a thread that exited takes its
        own wait with it)."""
        if self.start[1] is None or self.end[1] is None:
            return None
        return max(0.0, self.end[1] - self.start[1])
