"""`python -m benchmarks`: engine, HTTP and peer benchmarks in one run, written as JSON + Markdown + PNG.

Example (what `make bench` runs):
    python -m benchmarks --bundle models/sentiment-3class --data ../shared/data/twitter_entity \\
        --data-root ../shared/data
Development runs: add --quick (small grid, 2 s per level; both workloads).

This module only wires the parts: the flags (cli.py), the engine suite (suite.py), the servers
(servers.py), the targets (targets.py) and the raw result and its files (results.py).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from benchmarks import floor
from benchmarks.cli import parse_args
from benchmarks.machine import busy_processes, describe, machine_info
from benchmarks.results import compare, header, recompute, workload_info, write_reports
from benchmarks.servers import run_http, run_ours
from benchmarks.suite import distance, engine_alone, run_engine, service_plan
from benchmarks.targets import targets
from benchmarks.texts import Workload, load_workloads
from service.bundle import load_bundle


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return recompute(args.from_json, args.reference)
    bundle = load_bundle(args.bundle)
    info = machine_info()
    print(describe(info))
    workloads, skipped = load_workloads(args, bundle.text_pair)
    for note in skipped:
        print(f"note: {note}")
    if not workloads:
        print("no workload to measure", file=sys.stderr)
        return 2
    main_load, others = workloads[0], workloads[1:]
    texts, entities = main_load.texts, main_load.entities
    print(
        f"texts ({main_load.name}): {main_load.source}" + (" (with entities)" if entities else "")
    )
    results = header(args, bundle, info, main_load)
    results["workloads"] = {"notes": skipped, "runs": [workload_info(main_load)]}
    t0 = time.perf_counter()
    if not args.skip_engine:
        results["engine"] = run_engine(args, bundle, texts, entities)
    if not args.skip_http:
        again = None
        if not args.skip_engine:
            again = functools.partial(plan_after, args, bundle, main_load, results["engine"])
        results["http"] = pinned(args, run_http, bundle, texts, entities, again)
        results["floor"] = pinned(args, floor.measure, bundle, texts, entities)
    results["workloads"]["runs"] += [further_workload(args, bundle, w) for w in others]
    compare(results, args.reference)
    if not args.skip_engine:
        results["limit"] = distance(results, bundle, texts, entities, args.reference)
    results["targets"] = targets(results, args.reference)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["busy_processes_at_end"] = busy_processes()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return write_reports(results, args.out_dir / results["run_id"])


def further_workload(args: argparse.Namespace, bundle: Any, workload: Workload) -> dict[str, Any]:
    """A workload after the first: the engine alone and ours over HTTP on its texts, what its
    HTTP / engine-alone ratio needs (the grid, the pair, the peers ran on the first)."""
    print(f"workload {workload.name}: {workload.source}")
    run = workload_info(workload)
    if not args.skip_engine:
        run["engine"] = engine_alone(args, bundle, workload.texts, workload.entities)
    if not args.skip_http:
        run["http"] = pinned(args, run_ours, bundle, workload.texts, workload.entities)
        if not args.skip_engine:
            plan_after(args, bundle, workload, run["engine"])
        run["floor"] = pinned(args, floor.measure, bundle, workload.texts, workload.entities)
    return run


def plan_after(
    args: argparse.Namespace, bundle: Any, workload: Workload, part: dict[str, Any]
) -> None:
    """The engine in the service's plan measured once more, right after ours over HTTP, into
    `part["service_plan_after"]`: the VM's speed drifts within minutes, and the HTTP ÷ engine
    ratio reads the mean of the readings before and after (benchmarks/targets.py)."""
    print(f"the service's plan again, after HTTP ({workload.name}):")
    me = psutil.Process()
    pinned_to = me.cpu_affinity()
    me.cpu_affinity([])  # every core, as the first reading had, even inside a pinned part
    try:
        part["service_plan_after"] = service_plan(args, bundle, workload.texts, workload.entities)
    finally:
        me.cpu_affinity(pinned_to)


def pinned(
    args: argparse.Namespace,
    measure: Callable[..., dict[str, Any]],
    bundle: Any,
    texts: list[str],
    entities: list[str] | None,
    *extra: Any,
) -> dict[str, Any]:
    """An HTTP part with this process (the load generator) on `--client-cpus`, if given."""
    me = psutil.Process()
    before = me.cpu_affinity()
    if args.client_cpus:
        me.cpu_affinity(args.client_cpus)
    try:
        out = measure(args, bundle, texts, entities, *extra)
    finally:
        me.cpu_affinity(before)
    out["pinning"] = {"server": args.server_cpus, "client": args.client_cpus}
    return out


if __name__ == "__main__":
    sys.exit(main())
