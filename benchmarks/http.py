"""HTTP-level benchmark: a closed-loop level against a server process, measured on both sides.

The load comes from benchmarks/client.py and the server from benchmarks/server_process.py;
this module measures a level (RPS, latency percentiles, errors, and the CPU the server's
process tree and the client each used in the window, since both share the machine), every
level of one server, and an extra py-spy-sampled run.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks import proctimes, pyspy, stages
from benchmarks.client import Load, Tally, build_requests, closed_loop, run_async
from benchmarks.machine import busy_processes
from benchmarks.server_process import Server, ServerError
from benchmarks.stats import latency_summary


def run_level(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float,
    server_pid: int | None = None,
    at_window_start: Callable[[], object] | None = None,
    honour_retry_after: bool = False,
    keep_latencies: bool = False,
    at_window_end: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """One closed-loop level: RPS, latency percentiles, errors, and CPU of server vs client.

    `at_window_start` and `at_window_end` are called when the measurement window opens and
    closes (e.g. to start a profiler, to read counters); `keep_latencies` adds every latency
    (s) as `latencies_s`, for pooling several runs.
    """
    load = Load(host, port, requests, concurrency, warmup, duration, timeout, honour_retry_after)
    server = proctimes.tree(server_pid) if server_pid else []
    hooks = {"start": at_window_start, "end": at_window_end}
    tally, cpu = run_async(_measured(load, [psutil.Process()], server, hooks))
    row = _level_row(load, tally, cpu, measured_server=bool(server))
    return row | ({"latencies_s": tally.latencies} if keep_latencies else {})


async def _measured(
    load: Load,
    client: Sequence[psutil.Process],
    server: Sequence[psutil.Process],
    hooks: dict[str, Callable[[], object] | None],
) -> tuple[Tally, dict[str, float]]:
    """The closed loop, with the CPU seconds of client and server (and the clock) read as its
    window opens (`*_start`) and closes (`*_end`), each after that moment's hook."""
    cpu: dict[str, float] = {}

    async def sample_cpu(at: float, key: str) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        hook = hooks.get(key)
        if hook is not None:
            hook()
        cpu[f"client_{key}"] = proctimes.cpu_seconds(client)
        cpu[f"server_{key}"] = proctimes.cpu_seconds(server)
        cpu[f"wall_{key}"] = time.perf_counter()

    run = asyncio.create_task(closed_loop(load))
    now = time.perf_counter()
    await asyncio.gather(
        sample_cpu(now + load.warmup, "start"), sample_cpu(now + load.warmup + load.duration, "end")
    )
    return await run, cpu


def _level_row(
    load: Load, tally: Tally, cpu: dict[str, float], measured_server: bool
) -> dict[str, Any]:
    """A level's result row: what the client counted, and the cores each side used."""
    ok = len(tally.latencies)
    errors = sum(tally.errors.values())
    wall = cpu.get("wall_end", tally.window_end) - cpu.get("wall_start", tally.window_start)
    client_cpu = cpu["client_end"] - cpu["client_start"]
    server_cpu = cpu["server_end"] - cpu["server_start"]
    return {
        "concurrency": load.concurrency,
        "duration_s": load.duration,
        "ok": ok,
        "errors": errors,
        "error_kinds": dict(tally.errors),
        "warmup_errors": dict(tally.warmup_errors),  # not counted above, shown for honesty
        "unfinished_at_end": tally.unfinished,
        "rps": round(ok / load.duration, 1),
        **latency_summary(tally.latencies),
        "server_cpu_cores": round(server_cpu / wall, 2) if measured_server else None,
        "client_cpu_cores": round(client_cpu / wall, 2),
        "client_cpu_us_per_request": round(client_cpu / max(ok + errors, 1) * 1e6, 1),
        "machine_cores": psutil.cpu_count() or 1,
    }


@dataclass(frozen=True)
class Plan:
    """How the servers of a run are measured: the texts sent (with one entity per text for an
    entity-pair model) and the headers, the concurrency levels, each level's warm-up and
    measured seconds, the per-request timeout, and the CPUs a server may use."""

    texts: Sequence[str]
    levels: Sequence[int]
    warmup: float
    duration: float
    timeout: float
    headers: dict[str, str] | None = None
    entities: Sequence[str] | None = None
    cpus: Sequence[int] | None = None

    def requests(self, port: int) -> list[bytes]:
        """The texts as encoded requests to a server on `port` (loopback)."""
        return build_requests(
            self.texts, "127.0.0.1", port, headers=self.headers, entities=self.entities
        )


def bench_server(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    port: int,
    plan: Plan,
    startup_timeout: float = 180.0,
    profile: bool = False,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Every concurrency level of `plan` against a freshly started server.

    A fresh server per level keeps one level's backlog (a slow peer still working through
    requests whose clients timed out) from leaking into the next. With `profile`, one more
    run at the top level is sampled by py-spy; it is reported apart and never counted.
    """
    requests = plan.requests(port)
    result: dict[str, Any] = {"name": name, "argv": list(argv), "levels": []}

    def fresh() -> Server:
        return Server(name, argv, port, env, startup_timeout=startup_timeout, cpus=plan.cpus)

    for level in plan.levels:
        server = fresh()
        try:
            server.start()
        except ServerError as exc:
            result["skipped"] = str(exc)
            log(f"  {name}: SKIPPED, server failed to start: {exc}")
            return result
        try:
            row = run_level(
                "127.0.0.1", port, requests, level, plan.warmup, plan.duration, plan.timeout,
                server.pid,
            )  # fmt: skip
        finally:
            server.stop()
        row["other_heavy_jobs"] = busy_processes()  # a training run that started meanwhile
        result["levels"].append(row)
        log(
            f"  {name} c={level:>3}: {row['rps']:7.1f} rps  p50 {row['p50_ms']} ms  p99 "
            f"{row['p99_ms']} ms  errors {row['errors']}  cpu server {row['server_cpu_cores']} "
            f"client {row['client_cpu_cores']}"
        )
    if profile and plan.levels:
        result |= profile_runs(fresh, plan, log=lambda line: log(f"  {name} {line}"))
    return result


ONE_USER = 1  # issue #23: the core time per request at one user and at the top level


def profile_runs(
    new_server: Callable[[], Server], plan: Plan, log: Callable[[str], object] = print
) -> dict[str, Any]:
    """The extra py-spy runs, at the plan's top level (`py_spy`) and at one user
    (`py_spy_one_user`, when the top level is above one), each against a fresh server; and the
    same two sampling only the thread holding the GIL (`py_spy_gil`, `py_spy_gil_one_user`)."""
    out = {}
    for gil in (False, True):
        key = "py_spy_gil" if gil else "py_spy"
        out[key] = profile_run(new_server, plan, gil=gil)
        if max(plan.levels) > ONE_USER:
            out[f"{key}_one_user"] = profile_run(new_server, plan, level=ONE_USER, gil=gil)
    for run in out.values():
        cats = ", ".join(f"{c['category']} {c['share']:.0%}" for c in run.get("categories", [])[:5])
        per_request = run.get("stages", {}).get("outside_inference", {}).get("us")
        log(f"py-spy{' --gil' if run.get('gil') else ''} c={run.get('level')}: {cats}"
            f"{run.get('skipped', '')}"
            + (f"; outside inference {per_request} µs/request" if per_request else ""))  # fmt: skip
    return out


def profile_run(
    new_server: Callable[[], Server], plan: Plan, level: int | None = None, gil: bool = False
) -> dict[str, Any]:
    """An extra, uncounted run at `level` (default: the plan's top level) against a fresh
    server (from `new_server`, started and stopped here), with py-spy sampling it during the
    window: shares by category and function, and the core time per request by stage
    (benchmarks/stages.py) beside the server's CPU and run-queue time in the same window
    (`gil`: py-spy samples only the thread holding the GIL, benchmarks/pyspy.py)."""
    if pyspy.binary() is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    server = new_server()
    level, duration, port = level or max(plan.levels), plan.duration, server.port
    raw = Path(tempfile.mkstemp(prefix=f"pyspy-{server.name}-", suffix=".txt")[1])
    sampler: list[subprocess.Popen[bytes]] = []
    window = proctimes.Window()

    def open_window() -> None:
        window.open(server.pid)  # before py-spy starts: its start-up is not the server's
        sampler.append(pyspy.start(server.pid, duration, raw, gil=gil))

    try:
        server.start()
        row = run_level(
            "127.0.0.1", port, plan.requests(port), level, plan.warmup, duration, plan.timeout,
            server.pid, at_window_start=open_window, at_window_end=window.close,
        )  # fmt: skip
        err = sampler[0].communicate(timeout=duration + 30)[1].decode(errors="replace")
        if sampler[0].returncode != 0 or raw.stat().st_size == 0:
            return {"skipped": f"py-spy failed: {err[-300:]}"}
        return {
            "level": level,
            "gil": gil,
            "rps_while_sampled": row["rps"],
            **pyspy.summarize(raw),
            "stages": stage_times(raw, duration, row, window),
            "warnings": pyspy.warnings(err),
        }
    except (ServerError, OSError, subprocess.SubprocessError) as exc:
        return {"skipped": f"profile run failed: {exc}"}
    finally:
        for proc in sampler:
            if proc.poll() is None:
                proc.kill()
        server.stop()
        raw.unlink(missing_ok=True)


def stage_times(
    raw: Path, duration: float, row: dict[str, Any], window: proctimes.Window
) -> dict[str, Any]:
    """Core µs per request by stage from the samples, at the window's rate, and the server's
    CPU and run-queue time per request answered in the window (the OS's cross-check)."""
    out = stages.profile(raw, pyspy.RATE, pyspy.sampled_seconds(duration), row["rps"])
    return out | stages.cross_check(window.cpu_s, window.run_queue_s, row["ok"], window.loop_cpu_s)
