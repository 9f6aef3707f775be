"""`python -m benchmarks`: engine, HTTP and peer benchmarks in one run, written as JSON + Markdown + PNG.

Example (what `make bench` runs):
    python -m benchmarks --bundle models/sentiment-binary --data ../shared/data/twitter_entity
Development runs: add --quick (small grid, 2 s per level).

This module only wires the parts: the flags (cli.py), the engine suite (suite.py), the servers
(servers.py), the targets (targets.py) and the raw result and its files (results.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import psutil

from benchmarks.cli import parse_args
from benchmarks.machine import busy_processes, describe, machine_info
from benchmarks.results import compare, header, recompute, write_reports
from benchmarks.servers import run_http
from benchmarks.suite import distance, run_engine
from benchmarks.targets import targets
from benchmarks.texts import load_tweets
from service.bundle import load_bundle


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return recompute(args.from_json, args.reference)
    bundle = load_bundle(args.bundle)
    info = machine_info()
    print(describe(info))
    tweets, source = load_tweets(args.data, limit=args.texts)
    texts = [t.text for t in tweets]
    # An entity-pair model gets each tweet's entity (the peers, text-only by design, do not).
    entities = [t.entity for t in tweets] if bundle.text_pair else None
    print(f"texts: {source}" + (" (with entities)" if entities else ""))
    results = header(args, bundle, info, source, len(texts), entities is not None)
    t0 = time.perf_counter()
    if not args.skip_engine:
        results["engine"] = run_engine(args, bundle, texts, entities)
    if not args.skip_http:
        results["http"] = pinned_http(args, bundle, texts, entities)
        compare(results, args.reference)
    if not args.skip_engine:
        results["limit"] = distance(results, bundle, texts, entities, args.reference)
    results["targets"] = targets(results, args.reference)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["busy_processes_at_end"] = busy_processes()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return write_reports(results, args.out_dir / results["run_id"])


def pinned_http(
    args: argparse.Namespace, bundle: Any, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    """The HTTP part with this process (the load generator) on `--client-cpus`, if given."""
    me = psutil.Process()
    before = me.cpu_affinity()
    if args.client_cpus:
        me.cpu_affinity(args.client_cpus)
    try:
        out = run_http(args, bundle, texts, entities)
    finally:
        me.cpu_affinity(before)
    out["pinning"] = {"server": args.server_cpus, "client": args.client_cpus}
    return out


if __name__ == "__main__":
    sys.exit(main())
