"""Our service beside a variant of its own settings: both up at once, measured in turns.

This VM's speed drifts within minutes by more than most setting changes move throughput
(reports/experiments.md), so two rows measured one after the other mostly compare the drift.
Here, at each level, both servers run and the load alternates between them in short rounds
(A B B A B A A B, Thue-Morse: a steady drift, and any edge of going first or of following
itself, hits both alike), each round a fresh closed loop after a short warm-up; the servers are
started afresh, in the other order, for the second half (B A A B). A configuration's row pools
its rounds; the variant's row also carries the ratio of ours to it round by round (median and
range: the noise of this run, measured in it). The service's own metrics say how many
inference runs took each path (a request alone on the idle session, or one thread under load)
in each level's rounds.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.http import Plan, run_level
from benchmarks.machine import busy_processes
from benchmarks.server_process import Server
from benchmarks.stats import latency_summary

ROUNDS = 4  # per configuration and level
ROUND_WARMUP_S = 1.0  # every round opens new connections; the level's first gets the full warm-up
PAUSE_S = 0.3  # between rounds: the last server's spinning ORT threads go back to sleep
DRAIN_TIMEOUT_S = 60.0
RUNS_METRIC = "sentiment_inference_runs"
DEPTH_METRIC = "sentiment_queue_depth"


@dataclass(frozen=True)
class Config:
    """One row: a name and the environment its server runs with; `argv` when it is another
    server than the pair's (a peer), `observed` when it has our service's /metrics."""

    name: str
    env: dict[str, str]
    argv: tuple[str, ...] | None = None
    observed: bool = True


def schedule(rounds: int) -> list[int]:
    """Which configuration (0 or 1) runs in each slot: the Thue-Morse sequence, A B B A B A A B
    for four rounds each: each goes first in half the pairs, and follows itself as often as
    the other (within one, for other round counts)."""
    return [slot.bit_count() % 2 for slot in range(2 * rounds)]


def scrape(port: int) -> tuple[float, Counter[str]]:
    """One `GET /metrics`: texts admitted and not yet answered, and the inference runs so far
    by path ('alone' / 'loaded'), over all models."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    depth, runs = 0.0, Counter[str]()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == DEPTH_METRIC:
                depth += sample.value
            elif family.name == RUNS_METRIC and sample.name.endswith("_total"):
                runs[sample.labels["path"]] += int(sample.value)
    return depth, runs


def wait_drained(port: int, timeout: float = DRAIN_TIMEOUT_S) -> Counter[str]:
    """Until the server has answered everything it admitted (a round's clients leave with
    requests still queued, up to 500 at 500 users, whose work would otherwise run into the
    next round, on this server as 503s from a full queue, or beside the other); then its runs
    by path."""
    deadline = time.monotonic() + timeout
    while True:
        depth, runs = scrape(port)
        if depth == 0:
            return runs
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server on port {port} still works after {timeout:.0f} s")
        time.sleep(0.05)


def pooled(level: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a configuration's rounds at one level (their latencies pooled)."""
    latencies = [x for r in rounds for x in r.pop("latencies_s")]
    ok = sum(r["ok"] for r in rounds)
    seconds = sum(r["duration_s"] for r in rounds)

    def mean(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return round(statistics.fmean(values), 2) if values else None

    return {
        "concurrency": level,
        "duration_s": seconds,
        "ok": ok,
        "errors": sum(r["errors"] for r in rounds),
        "error_kinds": dict(sum((Counter(r["error_kinds"]) for r in rounds), Counter())),
        "warmup_errors": dict(sum((Counter(r["warmup_errors"]) for r in rounds), Counter())),
        "unfinished_at_end": sum(r["unfinished_at_end"] for r in rounds),
        "rps": round(ok / seconds, 1),
        **latency_summary(latencies),
        "server_cpu_cores": mean("server_cpu_cores"),
        "client_cpu_cores": mean("client_cpu_cores"),
        "client_cpu_us_per_request": mean("client_cpu_us_per_request"),
        "machine_cores": rounds[0]["machine_cores"],
        "rounds": [{"rps": r["rps"], "p50_ms": r["p50_ms"]} for r in rounds],
    }


def ratio_summary(ours: dict[str, Any], variant: dict[str, Any]) -> dict[str, float]:
    """Ours ÷ variant, RPS and p50, round by round (rounds i of both ran back to back)."""
    pairs = list(zip(ours["rounds"], variant["rounds"], strict=True))
    rps = [a["rps"] / b["rps"] for a, b in pairs if b["rps"]]
    p50 = [a["p50_ms"] / b["p50_ms"] for a, b in pairs if a["p50_ms"] and b["p50_ms"]]
    out = {}
    for name, values in (("rps", rps), ("p50", p50)):
        if values:
            out[f"{name}_median"] = round(statistics.median(values), 3)
            out[f"{name}_min"] = round(min(values), 3)
            out[f"{name}_max"] = round(max(values), 3)
    return out


def bench_pair(
    argv: Sequence[str],
    configs: tuple[Config, Config],
    ports: tuple[int, int],
    plan: Plan,
    rounds: int = ROUNDS,
    log: Callable[[str], object] = print,
) -> list[dict[str, Any]]:
    """Both configurations at every level of `plan`, `rounds` turns each of `duration / rounds`
    seconds, in two halves with freshly started servers (a level's backlog cannot leak into
    the next)."""
    argvs = [list(c.argv or argv) for c in configs]
    results: list[dict[str, Any]] = [
        {"name": c.name, "argv": a, "env": c.env, "levels": []}
        for c, a in zip(configs, argvs, strict=True)
    ]
    requests = [plan.requests(port) for port in ports]
    assert rounds % 2 == 0, "rounds come in two halves"
    order = schedule(rounds)
    for level in plan.levels:
        per_round: list[list[dict[str, Any]]] = [[], []]
        paths: list[Counter[str]] = [Counter(), Counter()]
        for half in (order[:rounds], order[rounds:]):
            # Started one after the other (each measures its start-up layout on a quiet machine:
            # two loading at once picked wrong), the half's first round's server first: each
            # starts first in one half (the one started first measured slower in every run with
            # one start order, unexplained: reports/experiments.md).
            with contextlib.ExitStack() as stack:
                servers = {
                    i: stack.enter_context(
                        Server(configs[i].name, argvs[i], ports[i], configs[i].env, cpus=plan.cpus)
                    )
                    for i in (half[0], 1 - half[0])
                }
                seen = {i: _runs(configs[i], ports[i]) for i in servers}  # start-up runs, if any
                for slot, i in enumerate(half):
                    row = run_level(
                        "127.0.0.1",
                        ports[i],
                        requests[i],
                        level,
                        plan.warmup if slot < 2 else ROUND_WARMUP_S,  # a fresh server: in full
                        plan.duration / rounds,
                        plan.timeout,
                        servers[i].pid,
                        keep_latencies=True,
                    )
                    runs = _runs(configs[i], ports[i], drained=True)
                    paths[i] += runs - seen[i]
                    seen[i] = runs
                    per_round[i].append(row)
                    time.sleep(PAUSE_S)
        busy = busy_processes()  # a training run that started meanwhile
        rows = [
            pooled(level, per_round[i]) | {"runs_by_path": dict(paths[i]), "other_heavy_jobs": busy}
            for i in (0, 1)
        ]
        rows[1]["ours_vs_this_by_round"] = ratio_summary(rows[0], rows[1])
        for result, row in zip(results, rows, strict=True):
            result["levels"].append(row)
            log(
                f"  {result['name']} c={level:>3}: {row['rps']:7.1f} rps  p50 {row['p50_ms']} ms"
                f"  p99 {row['p99_ms']} ms  errors {row['errors']}  runs {row['runs_by_path']}"
            )
        log(f"  ours ÷ variant by round: {rows[1]['ours_vs_this_by_round']}")
    return results


def _runs(config: Config, port: int, drained: bool = False) -> Counter[str]:
    """Inference runs by path so far (`drained`: once nothing admitted is left), from our
    service's /metrics; none for a peer, which has no such counter."""
    if not config.observed:
        return Counter()
    return wait_drained(port) if drained else scrape(port)[1]
