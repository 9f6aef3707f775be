"""benchmarks/steady_load.py: the background load writes every answer and every failure to its
ledger (status, version), runs until stopped, and counts a refused connection too."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.client import build_requests
from benchmarks.ports import free_port
from benchmarks.server_process import Server
from benchmarks.steady_load import SteadyLoad


@pytest.mark.slow
def test_every_answer_and_failure_reaches_the_ledger(
    tiny_bundle: Path, tiny_server_argv: Callable[..., list[str]]
) -> None:
    port = free_port()
    requests = build_requests(["love this game", "worst update"], "127.0.0.1", port)
    with Server("tiny", tiny_server_argv(tiny_bundle, port, "--fail-every", "5"), port):
        with SteadyLoad("127.0.0.1", port, requests, 4) as load:
            time.sleep(1.0)
        stopped = time.perf_counter()
        assert load.tally is not None  # the thread ended with its tally
        got = load.ledger.summary(0.0, math.inf)
    assert got["ok"] > 20
    assert got["failed_by_kind"] == {"http": {"http_503": got["failed"]}}
    assert abs(got["failed"] - got["requests"] / 5) <= 4  # every 5th, give or take in flight
    assert got["versions"] == {"?[Negative,Positive]": got["ok"]}  # labels: no model, no header
    assert got["servers"] == {"unknown": got["ok"]}  # no balancer, no x-served-by
    assert load.ledger.window(stopped, math.inf) == []  # nothing recorded after stop()

    with SteadyLoad("127.0.0.1", port, requests, 2) as refused:  # the server is gone
        time.sleep(0.3)
    kinds = refused.ledger.summary(0.0, math.inf)["failed_by_kind"]
    assert kinds["connection"]["connect:ConnectionRefusedError"] > 0
