"""Watchers that time what servers do, each on its own thread: the balancer's view of every
replica (UP/DOWN transitions and counters, from HAProxy's stats socket), a replica's own
`/ready` and listener (when it turned 503, when it stopped accepting), and what a process does
with a signal (so a scenario never sends one that would kill it by accident).
"""

from __future__ import annotations

import bisect
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.balancer import ServerStat


@dataclass(frozen=True)
class Transition:
    """A replica's state as traffic sees it (UP/DOWN) changed, seen at `t` (perf_counter s)."""

    t: float
    server: str
    before: str
    after: str


def transitions(
    before: dict[str, ServerStat], after: dict[str, ServerStat], t: float
) -> list[Transition]:
    """The state changes between two readings of the stats (a replica new in `after` is not a
    change)."""
    return [
        Transition(t, name, before[name].state, stat.state)
        for name, stat in after.items()
        if name in before and before[name].state != stat.state
    ]


class StatsWatcher:
    """Reads the balancer's stats every `interval` s, keeping every reading and every UP/DOWN
    transition with the time it was seen (so a time is known to within `interval`)."""

    def __init__(self, read: Callable[[], dict[str, ServerStat]], interval: float = 0.05) -> None:
        self.read = read
        self.interval = interval
        self.samples: list[tuple[float, dict[str, ServerStat]]] = []
        self._times: list[float] = []
        self.changes: list[Transition] = []
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-watcher", daemon=True)

    def start(self) -> StatsWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stats = self.read()
            except OSError:
                self.errors += 1
            else:
                self.add(time.perf_counter(), stats)
            self._stop.wait(self.interval)

    def add(self, t: float, stats: dict[str, ServerStat]) -> None:
        with self._lock:
            if self.samples:
                self.changes.extend(transitions(self.samples[-1][1], stats, t))
            self.samples.append((t, stats))
            self._times.append(t)

    def at(self, t: float) -> dict[str, ServerStat]:
        """The last reading at or before `t` (the first one if none was)."""
        with self._lock:
            if not self.samples:
                return {}
            i = bisect.bisect_right(self._times, t) - 1
            return self.samples[max(i, 0)][1]

    def became(self, server: str, state: str, since: float) -> float | None:
        """When `server` was first seen turning `state` at or after `since`, or None."""
        with self._lock:
            for change in self.changes:
                if change.t >= since and change.server == server and change.after == state:
                    return change.t
        return None

    def state(self, server: str) -> str | None:
        """`server`'s state in the latest reading."""
        with self._lock:
            stat = self.samples[-1][1].get(server) if self.samples else None
        return stat.state if stat else None

    def wait_state(self, server: str, state: str, timeout: float) -> bool:
        """Block until the latest reading shows `server` in `state` (False after `timeout` s)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.state(server) == state:
                return True
            time.sleep(self.interval / 2)
        return self.state(server) == state

    def wait_for(self, server: str, state: str, since: float, timeout: float) -> float | None:
        """Block until `server` turns `state` after `since` (or `timeout` s pass)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            seen = self.became(server, state, since)
            if seen is not None:
                return seen
            time.sleep(self.interval / 2)
        return self.became(server, state, since)

    def __enter__(self) -> StatsWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ready_status(port: int, timeout: float = 1.0) -> int | None:
    """`GET /ready` on a new connection to 127.0.0.1:port: the status, or None if the
    connection was refused (nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /ready HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
            head = sock.recv(64)
    except ConnectionRefusedError:
        return None
    except OSError:
        return 0  # reset or timed out: something listens but did not answer
    try:
        return int(head[9:12])
    except ValueError:
        return 0


class ReadyProbe:
    """Polls a replica's /ready every `interval` s: when it first answered 503 and when the
    listener first refused a connection."""

    def __init__(self, port: int, interval: float = 0.02) -> None:
        self.port = port
        self.interval = interval
        self.first_503: float | None = None
        self.first_refused: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.first_refused is None:
            status = ready_status(self.port)
            now = time.perf_counter()
            if status == 503 and self.first_503 is None:
                self.first_503 = now
            elif status is None:
                self.first_refused = now
            self._stop.wait(self.interval)

    def __enter__(self) -> ReadyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def signal_disposition(proc_status: str, signum: int) -> str:
    """What a process does with `signum`, from its /proc/<pid>/status text: `caught` (a
    handler runs), `ignored`, or `default` (for SIGHUP: the process ends)."""
    masks = {}
    for line in proc_status.splitlines():
        key, _, value = line.partition(":")
        if key in ("SigCgt", "SigIgn"):
            masks[key] = int(value.strip(), 16)
    bit = 1 << (signum - 1)
    if masks.get("SigCgt", 0) & bit:
        return "caught"
    if masks.get("SigIgn", 0) & bit:
        return "ignored"
    return "default"


def disposition(pid: int, signum: int) -> str:
    """`signal_disposition` of a live process (`unknown` where /proc cannot say)."""
    with contextlib.suppress(OSError):
        return signal_disposition(Path(f"/proc/{pid}/status").read_text(), signum)
    return "unknown"
