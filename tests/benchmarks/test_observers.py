"""benchmarks/observers.py: UP/DOWN transitions timed from the balancer's stats, a replica's
/ready and listener timed from outside, and the check that keeps a SIGHUP from ending a
process that does not handle it."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from benchmarks.balancer import ServerStat
from benchmarks.observers import (
    ReadyProbe,
    StatsWatcher,
    ready_status,
    signal_disposition,
    transitions,
)


def close(listener: socket.socket) -> None:
    """Stop listening now (a thread blocked in accept() would keep a plain close() waiting)."""
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def stats(**states: str) -> dict[str, ServerStat]:
    return {name: ServerStat(name, status) for name, status in states.items()}


def test_transitions_are_changes_of_what_traffic_sees() -> None:
    before = stats(r1="UP", r2="UP")
    assert transitions(before, stats(r1="UP 1/2", r2="UP"), 1.0) == []  # still sent requests
    (change,) = transitions(before, stats(r1="DOWN", r2="UP", r3="DOWN"), 2.0)
    assert (change.t, change.server, change.before, change.after) == (2.0, "r1", "UP", "DOWN")


def test_watcher_times_every_transition() -> None:
    readings = ["UP", "UP 1/2", "DOWN", "DOWN 1/2", "UP"]
    watcher = StatsWatcher(dict, interval=0.0)
    for t, status in enumerate(readings):
        watcher.add(float(t), stats(r1=status))
    assert [(c.t, c.after) for c in watcher.changes] == [(2.0, "DOWN"), (4.0, "UP")]
    assert watcher.became("r1", "DOWN", since=0.0) == 2.0
    assert watcher.became("r1", "UP", since=2.5) == 4.0
    assert watcher.became("r1", "UP", since=4.5) is None
    assert watcher.at(2.7)["r1"].status == "DOWN"
    assert watcher.at(-1.0)["r1"].status == "UP"  # before the first: the first
    assert watcher.state("r1") == "UP"


def test_watcher_thread_reads_until_stopped() -> None:
    calls = []

    def read() -> dict[str, ServerStat]:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("socket gone for a moment")
        return stats(r1="DOWN" if len(calls) > 3 else "UP")

    with StatsWatcher(read, interval=0.01) as watcher:
        assert watcher.wait_state("r1", "DOWN", timeout=5)
    assert watcher.errors == 1 and watcher.became("r1", "DOWN", 0.0) is not None


@pytest.fixture
def ready_server() -> Iterator[tuple[int, socket.socket]]:
    """A listener that answers /ready 200 twice, then 503, until it is closed."""
    statuses = [b"200", b"200"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                code = statuses.pop(0) if statuses else b"503"
                conn.sendall(b"HTTP/1.1 " + code + b" x\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, listener
    listener.close()  # closed already by most tests


def test_ready_status_and_a_closed_listener(ready_server: tuple[int, socket.socket]) -> None:
    port, listener = ready_server
    assert ready_status(port) == 200
    assert ready_status(port) == 200
    assert ready_status(port) == 503
    close(listener)
    time.sleep(0.05)
    assert ready_status(port) is None


def test_probe_sees_503_before_the_listener_closes(ready_server: tuple[int, socket.socket]) -> None:
    port, listener = ready_server
    with ReadyProbe(port, interval=0.01) as probe:
        deadline = time.monotonic() + 5
        while probe.first_503 is None and time.monotonic() < deadline:
            time.sleep(0.01)
        close(listener)
        while probe.first_refused is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert probe.first_503 is not None and probe.first_refused is not None
    assert probe.first_503 < probe.first_refused


STATUS = """Name:\tpython
SigQ:\t0/63704
SigPnd:\t0000000000000000
ShdPnd:\t0000000000000000
SigBlk:\t0000000000000000
SigIgn:\t0000000001001000
SigCgt:\t0000000100004002
"""


def test_signal_disposition_from_proc_status() -> None:
    assert signal_disposition(STATUS, signal.SIGINT) == "caught"  # bit 2
    assert signal_disposition(STATUS, signal.SIGTERM) == "caught"  # bit 15
    assert signal_disposition(STATUS, signal.SIGPIPE) == "ignored"  # bit 13
    assert signal_disposition(STATUS, signal.SIGHUP) == "default"  # bit 1: it would end it


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc")
def test_disposition_of_a_live_process() -> None:
    from benchmarks.observers import disposition

    previous = signal.signal(signal.SIGHUP, lambda *_: None)  # as run (nohup ignores it)
    try:
        assert disposition(os.getpid(), signal.SIGHUP) == "caught"
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert disposition(os.getpid(), signal.SIGHUP) == "default"
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        assert disposition(os.getpid(), signal.SIGHUP) == "ignored"
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert disposition(2**22 + 12345, signal.SIGHUP) == "unknown"
