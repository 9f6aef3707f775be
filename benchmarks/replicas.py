"""The replicas of the load-balancer stage and the stage's shared state: each replica a
`python -m service` process whose bundle folder is a symlink swapped atomically, and the stage
(balancer, replicas, watchers, load, ledger) every scenario of benchmarks/balancer_stage.py acts
on and measures with."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.balancer import Checks, delta
from benchmarks.ledger import Ledger
from benchmarks.observers import StatsWatcher
from benchmarks.ports import free_port
from benchmarks.server_process import Server, python_module
from benchmarks.steady_load import SteadyLoad

if TYPE_CHECKING:
    from benchmarks.balancer_stage import StageOptions

LINK_NAME = "sentiment"  # the served folder's name: the model name in every answer


def now() -> float:
    return time.perf_counter()


def point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target`, atomically: a process that reads the folder sees
    the old bundle or the new one, never a missing or half-copied folder."""
    link.parent.mkdir(parents=True, exist_ok=True)
    staged = link.with_name(link.name + ".next")
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    staged.symlink_to(target.resolve(), target_is_directory=True)
    os.replace(staged, link)


def replica_env(port: int, link: Path, checks: Checks) -> dict[str, str]:
    """A replica's settings: one core's worth (one worker, one single-threaded run at a time,
    so two replicas fill the two cores), and a drain sized to the balancer's checks."""
    return {
        "SENTIMENT_BUNDLES": str(link),
        "SENTIMENT_BUNDLE": str(link),  # the same single bundle: a caller's own value cannot clash
        "SENTIMENT_PORT": str(port),
        "SENTIMENT_HOST": "127.0.0.1",
        "SENTIMENT_WORKERS": "1",
        "SENTIMENT_THREADS": "1",
        "SENTIMENT_POOL_SIZE": "1",
        # The idle path would run a lone request on both cores: it never triggers under this
        # load, and its start-up timing would run beside the other, loaded replica.
        "SENTIMENT_IDLE_THREADS": "1",
        "SENTIMENT_DRAIN_DELAY_S": f"{checks.drain_delay_s:g}",
    }


@dataclass
class Replica:
    """One `python -m service` process behind the balancer, serving the bundle its link
    points at."""

    name: str
    port: int
    link: Path
    server: Server

    @classmethod
    def create(
        cls, name: str, folder: Path, bundle: Path, opts: StageOptions, taken: Sequence[int] = ()
    ) -> Replica:
        port = free_port()
        while port in taken:  # free now, but handed out for a replica not started yet
            port = free_port()
        link = folder / name / LINK_NAME
        point(link, bundle)
        env = replica_env(port, link, opts.checks)
        argv = list(opts.replica_argv) or python_module("service")
        server = Server(f"replica-{name}", argv, port, env, startup_timeout=opts.startup_timeout_s)
        return cls(name, port, link, server)

    @property
    def pid(self) -> int:
        return self.server.pid

    def alive(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None


@dataclass
class Stage:
    """Everything a scenario acts on and reads: the replicas, the balancer's stats over time,
    the ledger of answers, the two bundles and the timing knobs."""

    replicas: list[Replica]
    watch: StatsWatcher
    load: SteadyLoad
    bundles: tuple[Path, Path]  # (old, new): served at start, rolled out in (a)
    checks: Checks
    settle_s: float
    step_s: float
    switch_timeout_s: float
    served: Path = field(init=False)  # what the links point at now

    def __post_init__(self) -> None:
        self.served = self.bundles[0]

    @property
    def ledger(self) -> Ledger:
        return self.load.ledger

    def settle(self) -> None:
        """Steady traffic, nothing done: the before and after of every scenario."""
        time.sleep(self.settle_s)

    def point_all(self, bundle: Path) -> None:
        for replica in self.replicas:
            point(replica.link, bundle)
        self.served = bundle

    def window(self, start: float, end: float) -> dict[str, Any]:
        """The ledger over [start, end): counts, and the per-step series."""
        return {
            "seconds": round(end - start, 2),
            **self.ledger.summary(start, end),
            "series_step_s": self.step_s,
            "series": self.ledger.series(start, end, self.step_s),
        }

    def counters(self, name: str, start: float, end: float) -> dict[str, int]:
        """How HAProxy's counters for replica `name` grew over [start, end]."""
        before, after = self.watch.at(start).get(name), self.watch.at(end).get(name)
        return delta(before, after) if before and after else {}

    def start_again(self, replica: Replica, since: float) -> dict[str, float | None]:
        """Start `replica` (blocks until /ready is 200), then wait for HAProxy to mark it UP;
        both times from `since`."""
        started = now()
        replica.server.start()
        ready = now()
        up = self.watch.wait_for(replica.name, "UP", since, self.checks.up_within_s * 4 + 5)
        return {
            "start_after_s": seconds_since(started, since),
            "ready_after_s": seconds_since(ready, since),
            "up_after_s": seconds_since(up, since),
        }

    def wait_answer(self, since: float, server: str, timeout: float) -> float | None:
        """Block until `server` has answered a request after `since` (or `timeout` s pass)."""
        deadline = now() + timeout
        while now() < deadline:
            seen = self.ledger.first(since, server=server)
            if seen is not None:
                return seen
            time.sleep(0.05)
        return self.ledger.first(since, server=server)


def seconds_since(t: float | None, since: float) -> float | None:
    return None if t is None else round(t - since, 3)
